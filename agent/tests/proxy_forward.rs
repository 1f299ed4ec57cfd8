//! The agent's request path on the wire: a real TLS listener in front of a mock API
//! server, checked byte for byte (headers forwarded, streams unbuffered, upgrades relayed,
//! errors as `v1.Status`).

mod support;

use bytes::Bytes;
use gatehouse_agent::authenticate::Authenticator;
use gatehouse_agent::config::AgentConfig;
use gatehouse_agent::forward::Forwarder;
use gatehouse_agent::proxy::Proxy;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, oneshot};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
const ISSUER: &str = "https://issuer.test";

struct Harness {
    agent: SocketAddr,
    client_tls: Arc<rustls::ClientConfig>,
    signing: jsonwebtoken::EncodingKey,
    stop: Option<oneshot::Sender<()>>,
    /// Audit events the proxy emitted.
    events: Arc<support::RequestEvents>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Harness {
    fn token(&self, user: &str, groups: &[&str]) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = json!({"iss": ISSUER, "aud": "gatehouse", "sub": user, "groups": groups,
                            "iat": now, "exp": now + 300});
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, &self.signing).unwrap_or_default()
    }

    async fn tls_stream(
        &self,
        alpn: &[u8],
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, std::io::Error> {
        let mut config = (*self.client_tls).clone();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(self.agent).await?;
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1")
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        connector.connect(name, tcp).await
    }

    /// One request over a fresh connection speaking `alpn` (`h2` or `http/1.1`).
    async fn send(
        &self,
        alpn: &[u8],
        req: Request<Empty<Bytes>>,
    ) -> Result<Response<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
        let io = TokioIo::new(self.tls_stream(alpn).await?);
        if alpn == b"h2" {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Ok(sender.send_request(req).await?)
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn.with_upgrades());
            Ok(sender.send_request(req).await?)
        }
    }
}

/// A mock API server: `/echo` returns the request headers, `/stream` sends one chunk and
/// the next only when told, `/upgrade` switches protocols and echoes upper-cased bytes.
async fn mock_upstream(
    release: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
) -> Result<SocketAddr, std::io::Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let release = release.clone();
            let service = hyper::service::service_fn(move |req| upstream(req, release.clone()));
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades(),
            );
        }
    });
    Ok(addr)
}

type MockBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn upstream(
    mut req: Request<Incoming>,
    release: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
) -> Result<Response<MockBody>, Infallible> {
    let full = |b: Vec<u8>| http_body_util::Full::new(Bytes::from(b)).boxed();
    match req.uri().path() {
        "/api/v1/echo" => {
            let mut headers = serde_json::Map::new();
            for name in req.headers().keys() {
                let values: Vec<Value> = req
                    .headers()
                    .get_all(name)
                    .iter()
                    .map(|v| json!(v.to_str().unwrap_or_default()))
                    .collect();
                headers.insert(name.to_string(), Value::Array(values));
            }
            let body = json!({"headers": headers, "uri": req.uri().to_string()});
            Ok(Response::new(full(body.to_string().into_bytes())))
        }
        "/api/v1/stream" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            let gate = release.lock().await.take();
            tokio::spawn(async move {
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"one\n")))).await;
                if let Some(gate) = gate {
                    let _ = gate.await;
                }
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"two\n")))).await;
            });
            let stream = tokio_stream_from(rx);
            Ok(Response::new(StreamBody::new(stream).boxed()))
        }
        "/api/v1/upgrade" => {
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 64];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n].to_ascii_uppercase()).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut resp = Response::new(full(Vec::new()));
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = resp.headers_mut();
            h.insert("connection", http::HeaderValue::from_static("Upgrade"));
            h.insert("upgrade", http::HeaderValue::from_static("test-proto"));
            h.insert(
                "sec-websocket-protocol",
                http::HeaderValue::from_static("v5.channel.k8s.io"),
            );
            Ok(resp)
        }
        _ => {
            let mut resp = Response::new(full(b"{}".to_vec()));
            *resp.status_mut() = StatusCode::NOT_FOUND;
            Ok(resp)
        }
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn start(upstream: SocketAddr) -> Result<Harness, Box<dyn std::error::Error + Send + Sync>> {
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "agent-sa-token\n")?;

    let support::TestSigningKey { keys, signing } = support::es256_signing_key()?;

    let events = Arc::new(support::RequestEvents::default());
    let mut config = AgentConfig::default();
    config.oidc.issuer_url = ISSUER.into();
    config.upstream.url = format!("http://{upstream}");
    config.upstream.ca_file = None;
    config.upstream.token_file = Some(token_file);
    config.upstream.connect_timeout = Duration::from_secs(2);
    config.drain_timeout = Duration::from_secs(1);
    let proxy = Proxy::new(
        Authenticator::new(config.oidc.clone(), keys),
        Forwarder::new(&config.upstream)?,
        events.clone(),
        gatehouse_agent::audit::event::Site::default(),
    )
    .with_policy(support::allow_all_policy());

    let cert_key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])?.self_signed(&cert_key)?;
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, cert_key.serialize_pem())?;
    let server_tls = gatehouse_agent::tls::server_config(&cert_path, &key_path)?;
    let client_tls = gatehouse_agent::tls::client_config(Some(&cert_path))?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let agent = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        // Keep the temp dir (token file) alive as long as the agent runs.
        let _dir = dir;
        gatehouse_agent::server::serve(
            listener,
            Arc::new(proxy),
            Arc::new(server_tls),
            &config,
            async {
                let _ = stopped.await;
            },
        )
        .await;
    });
    Ok(Harness {
        agent,
        client_tls: Arc::new(client_tls),
        signing,
        stop: Some(stop),
        events,
    })
}

fn get(path: &str, token: &str) -> Result<Request<Empty<Bytes>>, http::Error> {
    Request::get(format!("https://127.0.0.1{path}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::new())
}

async fn json_body(
    resp: Response<Incoming>,
) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
    Ok(serde_json::from_slice(
        &resp.into_body().collect().await?.to_bytes(),
    )?)
}

#[tokio::test]
async fn forwarded_headers_carry_the_agent_credential_and_the_identity() -> TestResult {
    let upstream = mock_upstream(Arc::new(Mutex::new(None))).await?;
    let h = start(upstream).await?;
    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let mut req = get(
            "/api/v1/echo?x=1",
            &h.token("alice", &["engineers", "oncall"]),
        )?;
        req.headers_mut()
            .insert("x-custom", http::HeaderValue::from_static("kept"));
        req.headers_mut().insert(
            "impersonate-group",
            http::HeaderValue::from_static("system:masters"),
        );
        // Client impersonation is refused, not silently dropped.
        let resp = h.send(alpn, req).await?;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(json_body(resp).await?["reason"], "Forbidden");

        let mut req = get(
            "/api/v1/echo?x=1",
            &h.token("alice", &["engineers", "oncall"]),
        )?;
        req.headers_mut()
            .insert("x-custom", http::HeaderValue::from_static("kept"));
        req.headers_mut().insert(
            "proxy-authorization",
            http::HeaderValue::from_static("Basic eA=="),
        );
        let resp = h.send(alpn, req).await?;
        assert_eq!(resp.status(), StatusCode::OK);
        let seen = json_body(resp).await?;
        let headers = &seen["headers"];
        assert_eq!(seen["uri"], "/api/v1/echo?x=1");
        assert_eq!(headers["authorization"], json!(["Bearer agent-sa-token"]));
        assert_eq!(headers["impersonate-user"], json!(["alice"]));
        assert_eq!(headers["impersonate-group"], json!(["engineers", "oncall"]));
        assert_eq!(headers["x-custom"], json!(["kept"]));
        assert!(headers.get("proxy-authorization").is_none(), "{headers}");
    }
    Ok(())
}

#[tokio::test]
async fn errors_are_kubernetes_statuses() -> TestResult {
    let upstream = mock_upstream(Arc::new(Mutex::new(None))).await?;
    let h = start(upstream).await?;
    let resp = h.send(b"h2", get("/api/v1/echo", "garbage")?).await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let status = json_body(resp).await?;
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str()),
        (Some("Status"), Some("Unauthorized"))
    );

    let token = h.token("alice", &[]);
    for path in [
        "/api/v1/namespaces/dev/pods/..%2f..%2fsecrets",
        "/api/v1//secrets",
        "/api/v1/a/./b",
    ] {
        let resp = h.send(b"http/1.1", get(path, &token)?).await?;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(json_body(resp).await?["reason"], "BadRequest");
    }
    let denied = h.events.wait_for("/api/v1/echo").await;
    assert_eq!(denied.len(), 1, "one event per request");
    assert_eq!(
        (
            denied[0].decided_by.as_str(),
            denied[0].status_code,
            denied[0].user.as_str()
        ),
        ("authentication", 401, "")
    );
    let bad = h.events.wait_for("/api/v1//secrets").await;
    assert_eq!(
        (
            bad[0].decided_by.as_str(),
            bad[0].status_code,
            bad[0].user.as_str()
        ),
        ("classification", 400, "alice")
    );
    let all = serde_json::to_string(&h.events.all())?;
    assert!(
        !all.contains(&token),
        "the bearer token must never reach an event"
    );

    // An upstream that is gone: a port that was free a moment ago.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let h = start(dead).await?;
    let resp = h
        .send(b"h2", get("/api/v1/echo", &h.token("alice", &[]))?)
        .await?;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let status = json_body(resp).await?;
    assert_eq!(status["reason"], "ServiceUnavailable");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot reach the Kubernetes API server"),
        "{status}"
    );
    Ok(())
}

#[tokio::test]
async fn streams_are_relayed_without_buffering() -> TestResult {
    let (release_tx, release_rx) = oneshot::channel();
    let upstream = mock_upstream(Arc::new(Mutex::new(Some(release_rx)))).await?;
    let h = start(upstream).await?;
    let resp = h
        .send(b"h2", get("/api/v1/stream", &h.token("alice", &[]))?)
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    // The first chunk must arrive while the upstream still holds back the second one.
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame()).await?;
    let first = first
        .ok_or("stream ended")??
        .into_data()
        .map_err(|_| "not data")?;
    assert_eq!(&first[..], b"one\n");
    assert!(
        h.events.for_path("/api/v1/stream").is_empty(),
        "a stream's event is written only when it ends"
    );
    let _ = release_tx.send(());
    let rest = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await??
        .to_bytes();
    assert_eq!(&rest[..], b"two\n");
    let ended = h.events.wait_for("/api/v1/stream").await;
    assert_eq!(ended.len(), 1, "exactly one event for the stream");
    assert_eq!(
        (
            ended[0].verb.as_str(),
            ended[0].status_code,
            ended[0].bytes_out
        ),
        ("list", 200, 8)
    );
    assert_eq!(ended[0].decided_by, "test-allow-all");
    Ok(())
}

#[tokio::test]
async fn upgrades_are_relayed_both_ways() -> TestResult {
    let upstream = mock_upstream(Arc::new(Mutex::new(None))).await?;
    let h = start(upstream).await?;
    let mut tls = h.tls_stream(b"http/1.1").await?;
    let request = format!(
        "GET /api/v1/upgrade HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Connection: Upgrade\r\nUpgrade: test-proto\r\n\r\n",
        h.token("alice", &[])
    );
    tls.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut byte)).await??;
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: test-proto"), "{head}");
    assert!(
        head.contains("sec-websocket-protocol: v5.channel.k8s.io"),
        "{head}"
    );
    tls.write_all(b"hello").await?;
    let mut echoed = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut echoed)).await??;
    assert_eq!(&echoed, b"HELLO");
    Ok(())
}
