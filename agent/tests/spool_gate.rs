//! The full-spool policy on the real request path: fail-closed answers 503 with a
//! `v1.Status` (and `/readyz` says not ready) until acks free space; keep-serving goes on
//! while the dropped-events counter climbs.

mod support;

use bytes::Bytes;
use gatehouse_agent::audit::sink::{AuditSink, FanOut};
use gatehouse_agent::authenticate::Authenticator;
use gatehouse_agent::config::AgentConfig;
use gatehouse_agent::forward::Forwarder;
use gatehouse_agent::metrics::Metrics;
use gatehouse_agent::ops::{Ops, UpstreamProbe};
use gatehouse_agent::proxy::Proxy;
use gatehouse_agent::spool::metrics::DropReason;
use gatehouse_agent::spool::{FullPolicy, Spool, SpoolConfig, SpoolMetrics};
use gatehouse_common::audit::{ApiRequestEvent, AuditEvent};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
const ISSUER: &str = "https://issuer.test";

/// An API server stand-in that answers every request `200 {}`.
async fn upstream() -> Result<SocketAddr, std::io::Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                    Bytes::from_static(b"{}"),
                )))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    Ok(addr)
}

struct Agent {
    addr: SocketAddr,
    ops: SocketAddr,
    client_tls: Arc<rustls::ClientConfig>,
    signing: jsonwebtoken::EncodingKey,
    spool: Arc<Spool>,
    spool_metrics: SpoolMetrics,
    _dir: tempfile::TempDir,
}

async fn start(policy: FullPolicy) -> Result<Agent, Box<dyn std::error::Error + Send + Sync>> {
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "agent-sa-token\n")?;
    let support::TestSigningKey { keys, signing } = support::es256_signing_key()?;
    let mut config = AgentConfig::default();
    config.oidc.issuer_url = ISSUER.into();
    config.upstream.url = format!("http://{}", upstream().await?);
    config.upstream.ca_file = None;
    config.upstream.token_file = Some(token_file);
    config.drain_timeout = Duration::from_secs(1);

    let spool_metrics = SpoolMetrics::default();
    let spool = Spool::open(
        SpoolConfig {
            max_bytes: 8 * 1024,
            segment_bytes: 1024,
            fsync_interval: Duration::from_millis(2),
            full_policy: policy,
            ..SpoolConfig::new(dir.path().join("spool"))
        },
        spool_metrics.clone(),
    )?;
    let keys = Arc::new(keys);
    let proxy = Proxy::new(
        Authenticator::with_shared_keys(config.oidc.clone(), keys.clone()),
        Forwarder::new(&config.upstream)?,
        Arc::new(FanOut::new().with(spool.clone())),
        gatehouse_agent::audit::event::Site::default(),
    )
    .with_spool(spool.clone())
    .with_policy(support::allow_all_policy());

    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])?.self_signed(&key)?;
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    let server_tls = gatehouse_agent::tls::server_config(&cert_path, &key_path)?;
    let mut client_tls = gatehouse_agent::tls::client_config(Some(&cert_path))?;
    client_tls.alpn_protocols = vec![b"h2".to_vec()];

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let serve_config = config.clone();
    tokio::spawn(async move {
        gatehouse_agent::server::serve(
            listener,
            Arc::new(proxy),
            Arc::new(server_tls),
            &serve_config,
            std::future::pending(),
        )
        .await;
    });
    // /readyz with the spool's condition; the upstream stand-in answers its /readyz.
    let ops_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ops = ops_listener.local_addr()?;
    let ops_state = Arc::new(Ops {
        metrics: Arc::new(Metrics::new()),
        upstream: UpstreamProbe::new(&config.upstream)?,
        keys,
        extra: vec![Spool::ready_check(spool.clone())],
    });
    tokio::spawn(gatehouse_agent::ops::serve(
        ops_listener,
        ops_state,
        std::future::pending(),
    ));
    Ok(Agent {
        addr,
        ops,
        client_tls: Arc::new(client_tls),
        signing,
        spool,
        spool_metrics,
        _dir: dir,
    })
}

impl Agent {
    fn token(&self) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = json!({"iss": ISSUER, "aud": "gatehouse", "sub": "alice", "iat": now, "exp": now + 300});
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, &self.signing).unwrap_or_default()
    }

    /// `GET path` over h2; status and body.
    async fn get(
        &self,
        path: &str,
    ) -> Result<(StatusCode, Bytes), Box<dyn std::error::Error + Send + Sync>> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?;
        let tls = tokio_rustls::TlsConnector::from(self.client_tls.clone())
            .connect(name, tcp)
            .await?;
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let req = Request::get(format!("https://127.0.0.1{path}"))
            .header("authorization", format!("Bearer {}", self.token()))
            .body(Empty::<Bytes>::new())?;
        let resp =
            tokio::time::timeout(Duration::from_secs(10), sender.send_request(req)).await??;
        let status = resp.status();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }

    async fn readyz(
        &self,
    ) -> Result<(StatusCode, String), Box<dyn std::error::Error + Send + Sync>> {
        let tcp = tokio::net::TcpStream::connect(self.ops).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let req = Request::get("/readyz")
            .header("host", "ops")
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Fills the spool to its bound with filler events.
    fn fill(&self) {
        for i in 0..200 {
            self.spool.emit(&AuditEvent::ApiRequest(ApiRequestEvent {
                event_id: format!("filler-{i}"),
                ..ApiRequestEvent::default()
            }));
        }
        self.spool.flush(Duration::from_secs(10));
    }

    fn dropped(&self) -> u64 {
        self.spool_metrics
            .dropped
            .get_or_create(&DropReason {
                reason: "spool_full".into(),
            })
            .get()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_with_a_status_until_acks_free_space() -> TestResult {
    let agent = start(FullPolicy::FailClosed).await?;
    let (code, _) = agent.get("/api/v1/namespaces/dev/pods").await?;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(agent.readyz().await?.0, StatusCode::OK);

    agent.fill();
    let (code, body) = agent.get("/api/v1/namespaces/dev/pods").await?;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    let status: Value = serde_json::from_slice(&body)?;
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 503);
    assert_eq!(status["reason"], "ServiceUnavailable");
    assert_eq!(
        status["message"],
        "audit spool is full; refusing requests until the collector catches up"
    );
    let (ready, why) = agent.readyz().await?;
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
    assert!(why.contains("audit spool is full"), "{why}");

    // The collector catches up: everything acked, space freed, requests served again.
    let mut reader = agent.spool.reader();
    let batch = reader.read_batch(100_000, 64 << 20)?;
    agent.spool.ack(batch.end, batch.records)?;
    let (code, _) = agent.get("/api/v1/namespaces/dev/pods").await?;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(agent.readyz().await?.0, StatusCode::OK);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_serving_serves_on_and_counts_what_it_drops() -> TestResult {
    let agent = start(FullPolicy::KeepServing).await?;
    agent.fill();
    let before = agent.dropped();
    assert!(before > 0, "filling must already have dropped events");
    let (code, _) = agent.get("/api/v1/namespaces/dev/pods").await?;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(agent.readyz().await?.0, StatusCode::OK);
    // The served request's event could not be recorded: counted, never silent.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while agent.dropped() == before && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(agent.dropped() > before);
    Ok(())
}

#[test]
fn spool_and_shipper_metrics_are_exported() {
    let text = Metrics::new().render();
    for name in [
        "gatehouse_agent_spool_dropped_events_total",
        "gatehouse_agent_spool_bytes",
        "gatehouse_agent_spool_pending_records",
        "gatehouse_agent_spool_fsync_seconds",
        "gatehouse_agent_ship_acked_events_total",
        "gatehouse_agent_ship_in_flight_batches",
        "gatehouse_agent_ship_reconnects_total",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}
