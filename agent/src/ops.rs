//! The operations listener (plain HTTP, loopback by default): `/healthz` (process up),
//! `/readyz` (API server reachable with the agent's credential, signing keys loaded, and
//! any extra checks such as "policy loaded" registered later) and `/metrics` (Prometheus).

use crate::authenticate::jwks::KeyStore;
use crate::config::UpstreamConfig;
use crate::metrics::Metrics;
use crate::upstream::credential::UpstreamCredential;
use crate::upstream::{Upstream, UpstreamError};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

/// How long a readiness probe result is reused, so scrapes don't hammer the API server.
const PROBE_CACHE: Duration = Duration::from_secs(2);
/// Limit for one probe of the API server.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// An extra readiness condition (e.g. "policy loaded"); `Err` names what is missing.
pub type ReadyCheck =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

type ProbeClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Probes the API server's `/readyz` with the agent's own credential.
pub struct UpstreamProbe {
    url: String,
    credential: Arc<dyn UpstreamCredential>,
    client: ProbeClient,
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl UpstreamProbe {
    /// A probe for `config` (same source, CA and credential as the forwarder; an exec
    /// plugin's token is shared with it).
    pub fn new(config: &UpstreamConfig) -> Result<Self, UpstreamError> {
        Ok(Self::with_upstream(&Upstream::resolve(config)?, config))
    }

    /// A probe for an already resolved `upstream` (timeouts from `config`).
    pub fn with_upstream(upstream: &Upstream, config: &UpstreamConfig) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.connect_timeout));
        http.enforce_http(false);
        let connector = upstream.https_builder().enable_http1().wrap_connector(http);
        Self {
            url: upstream.url.trim_end_matches('/').to_string(),
            credential: upstream.credential.clone(),
            client: Client::builder(TokioExecutor::new()).build(connector),
            last: Mutex::new(None),
        }
    }

    /// `Ok` when the API server answered `/readyz` with 2xx (cached for a moment).
    pub async fn check(&self) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, result)) = &*last
            && at.elapsed() < PROBE_CACHE
        {
            return result.clone();
        }
        let result = self.probe().await;
        *last = Some((Instant::now(), result.clone()));
        result
    }

    async fn probe(&self) -> Result<(), String> {
        let mut req = Request::get(format!("{}/readyz", self.url));
        if let Some(value) = self
            .credential
            .authorization()
            .await
            .map_err(|e| crate::authenticate::jwks::error_chain(&e))?
        {
            req = req.header(header::AUTHORIZATION, value);
        }
        let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
        match tokio::time::timeout(PROBE_TIMEOUT, self.client.request(req)).await {
            Err(_) => Err("API server did not answer in time".into()),
            Ok(Err(err)) => Err(format!(
                "API server unreachable: {}",
                crate::authenticate::jwks::error_chain(&err)
            )),
            Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
            Ok(Ok(resp)) => Err(format!("API server /readyz answered {}", resp.status())),
        }
    }
}

/// What the operations endpoints look at.
pub struct Ops {
    /// Rendered at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Checked by `/readyz`.
    pub upstream: UpstreamProbe,
    /// Must have loaded keys once for `/readyz`.
    pub keys: Arc<KeyStore>,
    /// Further readiness conditions (hook for "policy loaded").
    pub extra: Vec<ReadyCheck>,
}

impl Ops {
    async fn readiness(&self) -> Result<(), String> {
        self.upstream.check().await?;
        if !self.keys.loaded().await {
            return Err("OIDC signing keys not loaded yet".into());
        }
        for check in &self.extra {
            check().await?;
        }
        Ok(())
    }

    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let text = |code: StatusCode, body: String| {
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            *resp.status_mut() = code;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            resp
        };
        match req.uri().path() {
            "/healthz" | "/livez" => text(StatusCode::OK, "ok\n".into()),
            "/readyz" => match self.readiness().await {
                Ok(()) => text(StatusCode::OK, "ok\n".into()),
                Err(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
            },
            "/metrics" => {
                let mut resp = text(StatusCode::OK, self.metrics.render());
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                resp
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
        }
    }
}

/// Serves the operations endpoints on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, ops: Arc<Ops>, shutdown: impl Future<Output = ()>) {
    tracing::info!(listen = ?listener.local_addr().ok(), "operations endpoints listening");
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
            () = &mut shutdown => break,
        };
        let ops = ops.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let ops = ops.clone();
                async move { Ok::<_, std::convert::Infallible>(ops.handle(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), service);
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "ops connection ended with an error");
            }
        });
    }
}
