//! The operations listener over real HTTP: `/healthz`, `/readyz` following the API
//! server's reachability and the key store, `/metrics` in Prometheus text format.

use bytes::Bytes;
use gatehouse_agent::audit::sink::AuditSink;
use gatehouse_agent::authenticate::jwks::KeyStore;
use gatehouse_agent::config::UpstreamConfig;
use gatehouse_agent::metrics::Metrics;
use gatehouse_agent::ops::{Ops, UpstreamProbe};
use gatehouse_common::audit::{AnsweredBy, ApiRequestEvent, AuditEvent, Decision};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

/// `GET path` on the ops listener: (status, body).
async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), BoxErr> {
    let io = TokioIo::new(TcpStream::connect(addr).await?);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "ops")
        .body(Empty::<Bytes>::new())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req)).await??;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A fake API server answering `/readyz` with 200 (to the agent's token) on `listener`.
fn api_server(listener: TcpListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = hyper::service::service_fn(
                |req: http::Request<hyper::body::Incoming>| async move {
                    let code = if req.uri().path() == "/readyz"
                        && req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            == Some("Bearer agent-token")
                    {
                        200
                    } else {
                        401
                    };
                    let mut resp =
                        http::Response::new(http_body_util::Full::new(Bytes::from_static(b"ok")));
                    *resp.status_mut() = http::StatusCode::from_u16(code).unwrap_or_default();
                    // One connection per probe, so stopping the server really takes it away.
                    resp.headers_mut()
                        .insert("connection", http::HeaderValue::from_static("close"));
                    Ok::<_, std::convert::Infallible>(resp)
                },
            );
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    })
}

async fn start_ops(
    upstream: SocketAddr,
    keys: KeyStore,
    metrics: Arc<Metrics>,
    dir: &std::path::Path,
) -> Result<SocketAddr, BoxErr> {
    let token = dir.join("token");
    std::fs::write(&token, "agent-token\n")?;
    let config = UpstreamConfig {
        url: format!("http://{upstream}"),
        ca_file: None,
        token_file: Some(token),
        connect_timeout: Duration::from_secs(1),
        ..UpstreamConfig::default()
    };
    let ops = Arc::new(Ops {
        metrics,
        upstream: UpstreamProbe::new(&config)?,
        keys: Arc::new(keys),
        extra: Vec::new(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(gatehouse_agent::ops::serve(
        listener,
        ops,
        std::future::pending(),
    ));
    Ok(addr)
}

/// Polls `/readyz` until it answers `want` (the probe result is cached ~2 s); bounded.
async fn ready_becomes(addr: SocketAddr, want: u16) -> Result<String, BoxErr> {
    let mut last = String::new();
    for _ in 0..40 {
        let (code, body) = get(addr, "/readyz").await?;
        if code == want {
            return Ok(body);
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!("/readyz never answered {want}; last: {last}").into())
}

#[tokio::test]
async fn readyz_follows_the_api_server() -> Result<(), BoxErr> {
    let dir = tempfile::tempdir()?;
    // Reserve a port, then close it: the API server is "down".
    let upstream = TcpListener::bind("127.0.0.1:0").await?;
    let addr = upstream.local_addr()?;
    drop(upstream);
    let ops = start_ops(
        addr,
        KeyStore::fixed(Vec::new()),
        Arc::new(Metrics::new()),
        dir.path(),
    )
    .await?;

    assert_eq!(get(ops, "/healthz").await?.0, 200);
    let body = ready_becomes(ops, 503).await?;
    assert!(body.contains("unreachable"), "{body}");

    let server = api_server(TcpListener::bind(addr).await?);
    ready_becomes(ops, 200).await?;

    server.abort();
    let body = ready_becomes(ops, 503).await?;
    assert!(body.contains("not ready"), "{body}");
    assert_eq!(get(ops, "/nope").await?.0, 404);
    Ok(())
}

#[tokio::test]
async fn readyz_waits_for_signing_keys() -> Result<(), BoxErr> {
    let dir = tempfile::tempdir()?;
    let upstream = TcpListener::bind("127.0.0.1:0").await?;
    let addr = upstream.local_addr()?;
    let _server = api_server(upstream);
    // An issuer nobody serves: keys never load.
    let tls = gatehouse_agent::tls::client_config(None)?;
    let keys = KeyStore::remote("https://127.0.0.1:9", tls, Duration::from_secs(10));
    let ops = start_ops(addr, keys, Arc::new(Metrics::new()), dir.path()).await?;
    let body = ready_becomes(ops, 503).await?;
    assert!(body.contains("signing keys"), "{body}");
    Ok(())
}

#[tokio::test]
async fn metrics_endpoint_shows_request_counts() -> Result<(), BoxErr> {
    let dir = tempfile::tempdir()?;
    let metrics = Arc::new(Metrics::new());
    for (verb, code) in [("get", 200), ("list", 200), ("get", 403)] {
        metrics.emit(&AuditEvent::ApiRequest(ApiRequestEvent {
            verb: verb.into(),
            status_code: code,
            decision: if code == 200 {
                Decision::Allow
            } else {
                Decision::Deny
            },
            answered_by: AnsweredBy::Upstream,
            latency_ms: 1.5,
            ..ApiRequestEvent::default()
        }));
    }
    let ops = start_ops(
        "127.0.0.1:9".parse()?,
        KeyStore::fixed(Vec::new()),
        metrics,
        dir.path(),
    )
    .await?;
    let (code, text) = get(ops, "/metrics").await?;
    assert_eq!(code, 200);
    assert!(
        text.contains(
            "gatehouse_agent_requests_total{verb=\"get\",decision=\"allow\",code=\"200\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "gatehouse_agent_requests_total{verb=\"get\",decision=\"deny\",code=\"403\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("gatehouse_agent_request_duration_seconds_count 3"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    Ok(())
}
