//! The collector's HTTP server: routes, metrics per request, graceful shutdown.

use crate::config::CollectorConfig;
use crate::metrics::{RequestLabels, ServerMetrics};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;

/// Shared state of the request handlers.
pub struct State {
    registry: Registry,
    metrics: ServerMetrics,
    // `None`: no backing store, ready as soon as it serves.
    store_ready: Option<Arc<AtomicBool>>,
}

impl State {
    /// State around `registry`, into which the server registers its own metrics.
    pub fn new(mut registry: Registry) -> Self {
        let metrics = ServerMetrics::register(&mut registry);
        Self {
            registry,
            metrics,
            store_ready: None,
        }
    }

    /// `/readyz` follows `flag` (kept current by the caller, e.g. from store health checks).
    pub fn with_store_readiness(mut self, flag: Arc<AtomicBool>) -> Self {
        self.store_ready = Some(flag);
        self
    }
}

/// Serves on `listener` until `shutdown` resolves, then drains for `config.drain_timeout`.
pub async fn run(
    listener: TcpListener,
    config: CollectorConfig,
    registry: Registry,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    run_with_state(listener, config, Arc::new(State::new(registry)), shutdown).await
}

/// [`run`] with a prepared [`State`] (e.g. with store readiness).
pub async fn run_with_state(
    listener: TcpListener,
    config: CollectorConfig,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tracing::info!(listen = ?listener.local_addr().ok(), "gatehouse collector listening");
    tokio::pin!(shutdown);
    loop {
        let (tcp, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let state = state.clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(&state, &req)) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(tcp), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(config.drain_timeout) => tracing::warn!("drain deadline reached"),
    }
    Ok(())
}

/// Answers one request.
pub fn handle<B>(state: &State, req: &Request<B>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let (route, resp) = match (req.method(), path) {
        (&Method::GET | &Method::HEAD, "/healthz") => ("/healthz", text(StatusCode::OK, "ok\n")),
        (&Method::GET | &Method::HEAD, "/readyz") => match &state.store_ready {
            Some(flag) if !flag.load(Ordering::Relaxed) => (
                "/readyz",
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "audit store not reachable: batches are not acknowledged\n",
                ),
            ),
            _ => ("/readyz", text(StatusCode::OK, "ok\n")),
        },
        (&Method::GET, "/metrics") => ("/metrics", metrics(state)),
        _ => (
            "other",
            text(
                StatusCode::NOT_FOUND,
                "not found (this collector version serves /healthz, /readyz and /metrics only)\n",
            ),
        ),
    };
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route.into(),
            code: resp.status().as_u16(),
        })
        .inc();
    resp
}

fn metrics(state: &State) -> Response<Full<Bytes>> {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &state.registry) {
        Ok(()) => {
            let mut resp = Response::new(Full::new(Bytes::from(out)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            resp
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n",
        ),
    }
}

fn text(code: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap_or_default()
    }

    #[tokio::test]
    async fn health_and_metrics() -> Result<(), Box<dyn std::error::Error>> {
        let state = State::new(Registry::default());
        assert_eq!(handle(&state, &get("/healthz")).status(), StatusCode::OK);
        assert_eq!(handle(&state, &get("/readyz")).status(), StatusCode::OK);
        assert_eq!(
            handle(&state, &get("/v1/events")).status(),
            StatusCode::NOT_FOUND
        );
        let body = handle(&state, &get("/metrics"))
            .into_body()
            .collect()
            .await?
            .to_bytes();
        let text = String::from_utf8(body.to_vec())?;
        assert!(
            text.contains(
                "gatehouse_collector_http_requests_total{route=\"/healthz\",code=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "gatehouse_collector_http_requests_total{route=\"other\",code=\"404\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("gatehouse_collector_build_info"), "{text}");
        Ok(())
    }

    #[test]
    fn readyz_follows_the_store() {
        let flag = Arc::new(AtomicBool::new(false));
        let state = State::new(Registry::default()).with_store_readiness(flag.clone());
        assert_eq!(
            handle(&state, &get("/readyz")).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(handle(&state, &get("/healthz")).status(), StatusCode::OK);
        flag.store(true, Ordering::Relaxed);
        assert_eq!(handle(&state, &get("/readyz")).status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn run_serves_and_stops() -> Result<(), Box<dyn std::error::Error>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run(
            listener,
            CollectorConfig::default(),
            Registry::default(),
            async {
                let _ = rx.await;
            },
        ));
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut buf = Vec::new();
        tcp.read_to_end(&mut buf).await?;
        let reply = String::from_utf8_lossy(&buf);
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        assert!(reply.ends_with("ok\n"), "{reply}");
        let _ = tx.send(());
        server.await??;
        Ok(())
    }
}
