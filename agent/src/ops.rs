//! The operations listener (plain HTTP, keep it off the public network): `/healthz`
//! (process up), `/readyz` (the API server answers the agent's credential and the OIDC keys
//! are loaded), and Prometheus `/metrics`.
//!
//! `/readyz` answers in the API server's own style (`[+]check ok` / `[-]check failed:
//! reason`), so an SRE reading a failing probe sees which dependency is down. The upstream
//! probe result is reused for a few seconds, so a tight probe loop is not a load on the
//! API server.

use crate::authenticate::jwks::KeyStore;
use crate::forward::Forwarder;
use crate::{Body, full_body};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

/// What `/readyz` checks.
pub struct Readiness {
    keys: Arc<KeyStore>,
    upstream: Forwarder,
    cache_for: Duration,
    last_probe: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Readiness {
    /// Checks `upstream` (probe reused for `cache_for`) and that `keys` were loaded.
    pub fn new(keys: Arc<KeyStore>, upstream: Forwarder, cache_for: Duration) -> Self {
        Self {
            keys,
            upstream,
            cache_for,
            last_probe: Mutex::new(None),
        }
    }

    /// Each check by name with its result.
    pub async fn check(&self) -> Vec<(&'static str, Result<(), String>)> {
        let upstream = {
            let mut last = self.last_probe.lock().await;
            match last.as_ref() {
                Some((at, result)) if at.elapsed() < self.cache_for => result.clone(),
                _ => {
                    let result = self.upstream.probe().await;
                    *last = Some((Instant::now(), result.clone()));
                    result
                }
            }
        };
        let keys = if self.keys.is_loaded().await {
            Ok(())
        } else {
            Err("the OIDC issuer's signing keys have not been fetched yet".to_string())
        };
        vec![("upstream", upstream), ("oidc-keys", keys)]
    }
}

/// Shared state of the ops listener.
pub struct Ops {
    /// The metrics registry `/metrics` renders.
    pub registry: Registry,
    /// `/readyz` checks.
    pub readiness: Readiness,
}

/// Serves `ops` on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, ops: Arc<Ops>, shutdown: impl Future<Output = ()>) {
    tracing::info!(listen = ?listener.local_addr().ok(), "ops listener (healthz, readyz, metrics) up");
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(err) => {
                    tracing::warn!(error = %err, "ops accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let ops = ops.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let ops = ops.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&ops, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn route(ops: &Ops, req: Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
        "/healthz" | "/livez" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let checks = ops.readiness.check().await;
            let ready = checks.iter().all(|(_, r)| r.is_ok());
            let mut out = String::new();
            for (name, result) in &checks {
                match result {
                    Ok(()) => out.push_str(&format!("[+]{name} ok\n")),
                    Err(why) => out.push_str(&format!("[-]{name} failed: {why}\n")),
                }
            }
            if ready {
                out.push_str("readyz check passed\n");
                text(StatusCode::OK, out)
            } else {
                out.push_str("readyz check failed\n");
                text(StatusCode::SERVICE_UNAVAILABLE, out)
            }
        }
        "/metrics" => {
            let mut resp = text(StatusCode::OK, crate::metrics::encode(&ops.registry));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            resp
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: the ops listener serves /healthz, /readyz and /metrics\n".into(),
        ),
    }
}

fn text(code: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(full_body(body));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
