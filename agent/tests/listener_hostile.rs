//! The kubectl listener under hostile clients, over real TLS with raw bytes: request
//! smuggling attempts, oversized heads, slowloris, idle handshakes, connection floods,
//! client certificates from the right and a wrong CA, and certificate hot reload. A fake
//! API server counts what actually reaches it.

mod support;

use bytes::Bytes;
use gatehouse_agent::authenticate::Authenticator;
use gatehouse_agent::config::AgentConfig;
use gatehouse_agent::forward::Forwarder;
use gatehouse_agent::proxy::Proxy;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type BoxErr = Box<dyn std::error::Error + Send + Sync>;
const ISSUER: &str = "https://issuer.test";
/// Upper bound for any single wait in these tests, so none can hang.
const BOUND: Duration = Duration::from_secs(15);

/// What the fake API server saw: one entry per request whose body arrived complete.
#[derive(Default)]
struct Seen(Mutex<Vec<Seen1>>);

#[derive(Clone, Debug)]
struct Seen1 {
    path: String,
    user: Option<String>,
    groups: Vec<String>,
}

impl Seen {
    fn all(&self) -> Vec<Seen1> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

async fn fake_upstream(seen: Arc<Seen>) -> Result<SocketAddr, std::io::Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let seen = seen.clone();
                async move {
                    let path = req.uri().path().to_string();
                    let header = |name: &str| -> Vec<String> {
                        req.headers()
                            .get_all(name)
                            .iter()
                            .filter_map(|v| v.to_str().ok().map(str::to_string))
                            .collect()
                    };
                    let user = header("impersonate-user").into_iter().next();
                    let groups = header("impersonate-group");
                    let complete = req.into_body().collect().await.is_ok();
                    if complete && let Ok(mut s) = seen.0.lock() {
                        s.push(Seen1 { path, user, groups });
                    }
                    let body = http_body_util::Full::new(Bytes::from_static(b"{}"));
                    Ok::<_, Infallible>(Response::new(body))
                }
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
    seen: Arc<Seen>,
    events: Arc<support::RequestEvents>,
    signing: jsonwebtoken::EncodingKey,
    dir: tempfile::TempDir,
    server_ca: PathBuf,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn write_self_signed(dir: &Path, cert: &str, key: &str) -> Result<String, BoxErr> {
    let pair = rcgen::KeyPair::generate()?;
    let c = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])?.self_signed(&pair)?;
    std::fs::write(dir.join(cert), c.pem())?;
    std::fs::write(dir.join(key), pair.serialize_pem())?;
    Ok(c.pem())
}

/// Starts an agent in front of a fresh fake upstream; `tune` adjusts the config.
async fn start(tune: impl FnOnce(&mut AgentConfig, &Path)) -> Result<Agent, BoxErr> {
    let seen = Arc::new(Seen::default());
    let upstream = fake_upstream(seen.clone()).await?;
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "agent-sa-token\n")?;

    let support::TestSigningKey { keys, signing } = support::es256_signing_key()?;

    let server_pem = write_self_signed(dir.path(), "tls.crt", "tls.key")?;
    let server_ca = dir.path().join("server-ca.pem");
    std::fs::write(&server_ca, server_pem)?;

    let mut config = AgentConfig::default();
    config.oidc.issuer_url = ISSUER.into();
    config.upstream.url = format!("http://{upstream}");
    config.upstream.ca_file = None;
    config.upstream.token_file = Some(token_file);
    config.upstream.connect_timeout = Duration::from_secs(2);
    config.drain_timeout = Duration::from_secs(1);
    config.tls_cert_file = dir.path().join("tls.crt");
    config.tls_key_file = dir.path().join("tls.key");
    tune(&mut config, dir.path());

    let events = Arc::new(support::RequestEvents::default());
    let proxy = Proxy::new(
        Authenticator::new(config.oidc.clone(), keys),
        Forwarder::new(&config.upstream)?,
        std::sync::Arc::new(gatehouse_agent::audit::sink::FanOut::new().with(events.clone())),
        gatehouse_agent::audit::event::Site::default(),
    )
    .with_policy(support::allow_all_policy());
    let tls = gatehouse_agent::tls::listener_config(
        &config.tls_cert_file,
        &config.tls_key_file,
        config.client_ca_file.as_deref(),
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        gatehouse_agent::server::serve(listener, Arc::new(proxy), Arc::new(tls), &config, async {
            let _ = stopped.await;
        })
        .await;
    });
    Ok(Agent {
        addr,
        seen,
        events,
        signing,
        dir,
        server_ca,
        stop: Some(stop),
    })
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

impl Agent {
    fn token(&self, user: &str) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = json!({"iss": ISSUER, "aud": "gatehouse", "sub": user,
                            "iat": now, "exp": now + 300});
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, &self.signing).unwrap_or_default()
    }

    fn client_config(&self) -> Result<rustls::ClientConfig, BoxErr> {
        let mut config = gatehouse_agent::tls::client_config(Some(&self.server_ca))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    async fn connect_with(&self, config: rustls::ClientConfig) -> Result<Tls, BoxErr> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(self.addr).await?;
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?;
        Ok(tokio::time::timeout(BOUND, connector.connect(name, tcp)).await??)
    }

    async fn connect(&self) -> Result<Tls, BoxErr> {
        self.connect_with(self.client_config()?).await
    }

    /// Sends raw bytes on a fresh TLS connection and reads until the agent closes it.
    async fn raw(&self, bytes: &[u8]) -> Result<String, BoxErr> {
        let mut tls = self.connect().await?;
        tls.write_all(bytes).await?;
        tls.flush().await?;
        Ok(read_to_close(&mut tls).await)
    }
}

/// Everything until EOF or an error (a reset counts as closed); bounded by [`BOUND`].
async fn read_to_close(tls: &mut Tls) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(BOUND, async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_lines(resp: &str) -> Vec<&str> {
    resp.lines()
        .filter(|l| l.starts_with("HTTP/1.1 "))
        .collect()
}

const PODS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn content_length_with_chunked_is_one_request_and_the_connection_closes() -> TestResult {
    let agent = start(|_, _| {}).await?;
    let token = agent.token("alice");
    // A front end trusting Content-Length would see one request with body "0\r\n\r\nGET...";
    // one trusting chunked sees a second, smuggled request. Neither reading may reach upstream twice.
    let raw = format!(
        "POST {PODS} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 60\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
         GET /api/v1/smuggled HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let resp = agent.raw(raw.as_bytes()).await?;
    assert!(status_lines(&resp).len() <= 1, "{resp}");
    let seen = agent.seen.all();
    assert!(
        seen.iter().all(|s| s.path != "/api/v1/smuggled"),
        "{seen:?}"
    );
    assert!(seen.len() <= 1, "{seen:?}");
    Ok(())
}

#[tokio::test]
async fn conflicting_content_lengths_are_refused() -> TestResult {
    let agent = start(|_, _| {}).await?;
    let token = agent.token("alice");
    let raw = format!(
        "POST {PODS} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 4\r\nContent-Length: 40\r\n\r\nabcd"
    );
    let resp = agent.raw(raw.as_bytes()).await?;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(agent.seen.all().is_empty());
    Ok(())
}

#[tokio::test]
async fn obs_fold_is_refused() -> TestResult {
    let agent = start(|_, _| {}).await?;
    let token = agent.token("alice");
    let raw = format!(
        "GET {PODS} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\
         X-Folded: one\r\n two\r\n\r\n"
    );
    let resp = agent.raw(raw.as_bytes()).await?;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(agent.seen.all().is_empty());
    Ok(())
}

#[tokio::test]
async fn invalid_chunk_size_never_completes_upstream() -> TestResult {
    let agent = start(|_, _| {}).await?;
    let token = agent.token("alice");
    let raw = format!(
        "POST {PODS} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\
         Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n\
         GET /api/v1/smuggled HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let resp = agent.raw(raw.as_bytes()).await?;
    // Either an error status or a closed connection, never a success.
    assert!(!resp.starts_with("HTTP/1.1 2"), "{resp}");
    assert!(status_lines(&resp).len() <= 1, "{resp}");
    assert!(agent.seen.all().is_empty(), "{:?}", agent.seen.all());
    Ok(())
}

#[tokio::test]
async fn too_many_or_too_large_headers_get_431() -> TestResult {
    let agent = start(|c, _| {
        c.limits.max_headers = 20;
        c.limits.max_header_bytes = 16 * 1024;
    })
    .await?;
    let token = agent.token("alice");
    let many: String = (0..40).map(|i| format!("X-H{i}: v\r\n")).collect();
    let raw =
        format!("GET {PODS} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n{many}\r\n");
    let resp = agent.raw(raw.as_bytes()).await?;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");

    let big = "x".repeat(32 * 1024);
    let raw = format!(
        "GET {PODS} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nX-Big: {big}\r\n\r\n"
    );
    let resp = agent.raw(raw.as_bytes()).await?;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    assert!(agent.seen.all().is_empty());

    // Within the limits the same agent forwards normally.
    let raw = format!(
        "GET {PODS} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let resp = agent.raw(raw.as_bytes()).await?;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(agent.seen.all().len(), 1);
    Ok(())
}

#[tokio::test]
async fn slowloris_is_cut_after_the_header_timeout() -> TestResult {
    let agent = start(|c, _| c.limits.header_read_timeout = Duration::from_secs(1)).await?;
    let mut tls = agent.connect().await?;
    let head = format!("GET {PODS} HTTP/1.1\r\nHost: a\r\nX-Slow: ");
    let mut cut = false;
    // Trickle one byte every 250 ms for at most 40 bytes (10 s, well past the 1 s timeout).
    let mut bytes = head.into_bytes();
    bytes.resize(bytes.len() + 40, b'a');
    for byte in bytes {
        if tls.write_all(&[byte]).await.is_err() || tls.flush().await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(250), tls.read(&mut buf)).await {
            Err(_) => {} // nothing yet: keep trickling
            Ok(Ok(_)) | Ok(Err(_)) => {
                // A 408 or EOF/reset: the agent gave up on us.
                cut = true;
                break;
            }
        }
    }
    assert!(cut, "the agent kept a trickling connection open");
    Ok(())
}

#[tokio::test]
async fn a_connection_that_never_handshakes_is_dropped() -> TestResult {
    let agent = start(|c, _| c.tls_handshake_timeout = Duration::from_secs(1)).await?;
    let mut tcp = TcpStream::connect(agent.addr).await?;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(BOUND, tcp.read(&mut buf)).await?;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    Ok(())
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused() -> TestResult {
    let agent = start(|c, _| c.limits.max_connections = 2).await?;
    let first = agent.connect().await?;
    let _second = agent.connect().await?;
    // The third gets closed before (or right after) the handshake and can't be used.
    let refused = match agent.connect().await {
        Err(_) => true,
        Ok(mut third) => {
            let raw = format!("GET {PODS} HTTP/1.1\r\nHost: a\r\n\r\n");
            let _ = third.write_all(raw.as_bytes()).await;
            read_to_close(&mut third).await.is_empty()
        }
    };
    assert!(refused, "a third connection was served");
    // Freeing a slot lets a new client in (the slot frees when the agent notices the close).
    drop(first);
    let mut served = false;
    for _ in 0..50 {
        if let Ok(mut tls) = agent.connect().await {
            let raw = format!("GET {PODS} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
            if tls.write_all(raw.as_bytes()).await.is_ok()
                && read_to_close(&mut tls).await.starts_with("HTTP/1.1 401")
            {
                served = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "no connection was served after one closed");
    Ok(())
}

struct ClientPki {
    ca_pem: String,
    leaf: rustls::pki_types::CertificateDer<'static>,
    leaf_key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn client_pki(cn: &str, org: &str) -> Result<ClientPki, BoxErr> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test client CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, org);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = params.signed_by(&leaf_key, &issuer)?;
    Ok(ClientPki {
        ca_pem: ca.pem(),
        leaf: leaf.der().clone(),
        leaf_key: rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der())?,
    })
}

#[tokio::test]
async fn client_certificates_authenticate_only_from_the_client_ca() -> TestResult {
    let good = client_pki("carol", "sre")?;
    let other = client_pki("mallory", "sre")?;
    let ca_pem = good.ca_pem.clone();
    let agent = start(move |c, dir| {
        let path = dir.join("client-ca.pem");
        if std::fs::write(&path, &ca_pem).is_ok() {
            c.client_ca_file = Some(path);
        }
    })
    .await?;
    let with_cert = |pki: &ClientPki| -> Result<rustls::ClientConfig, BoxErr> {
        let mut store = rustls::RootCertStore::empty();
        for cert in gatehouse_agent::tls::read_certs(&agent.server_ca)? {
            store.add(cert)?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store)
        .with_client_auth_cert(vec![pki.leaf.clone()], pki.leaf_key.clone_key())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    };
    let request = format!("GET {PODS} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");

    // Signed by the client CA, no bearer token: forwarded as CN / O.
    let mut tls = agent.connect_with(with_cert(&good)?).await?;
    tls.write_all(request.as_bytes()).await?;
    let resp = read_to_close(&mut tls).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = agent.seen.all();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].user.as_deref(), Some("carol"));
    assert_eq!(seen[0].groups, vec!["sre".to_string()]);
    // The audit event says how carol was authenticated: by her certificate, not a token.
    let events = agent.events.wait_for_count(1).await;
    assert_eq!(
        (events[0].user.as_str(), events[0].auth_method),
        (
            "carol",
            gatehouse_common::audit::AuthMethod::ClientCertificate
        ),
        "{events:?}"
    );

    // Another CA: the handshake fails (TLS 1.3 reports it on the first read).
    let refused = match agent.connect_with(with_cert(&other)?).await {
        Err(_) => true,
        Ok(mut tls) => {
            let _ = tls.write_all(request.as_bytes()).await;
            !read_to_close(&mut tls).await.starts_with("HTTP/1.1 200")
        }
    };
    assert!(refused);

    // No certificate at all still connects (OIDC users), and without a token gets 401.
    let resp = agent.raw(request.as_bytes()).await?;
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    assert_eq!(agent.seen.all().len(), 1);
    let events = agent.events.wait_for_count(2).await;
    assert_eq!(
        events[1].auth_method,
        gatehouse_common::audit::AuthMethod::None
    );

    // A bearer token wins over a certificate and is recorded as OIDC.
    let mut tls = agent.connect_with(with_cert(&good)?).await?;
    let with_token = format!(
        "GET {PODS} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        agent.token("dave")
    );
    tls.write_all(with_token.as_bytes()).await?;
    let resp = read_to_close(&mut tls).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let events = agent.events.wait_for_count(3).await;
    assert_eq!(
        (events[2].user.as_str(), events[2].auth_method),
        ("dave", gatehouse_common::audit::AuthMethod::Oidc),
        "{events:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_replaced_certificate_is_served_to_new_connections() -> TestResult {
    let agent = start(|_, _| {}).await?;
    let dir = agent.dir.path().to_path_buf();
    let mut old = agent.connect().await?;
    let first = old
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .ok_or("no server certificate")?;

    // Rotate: new pair on disk; the client trusts both (as during a CA-signed rotation).
    let old_pem = std::fs::read_to_string(&agent.server_ca)?;
    let new_pem = write_self_signed(&dir, "tls.crt", "tls.key")?;
    let both = dir.join("both.pem");
    std::fs::write(&both, format!("{old_pem}{new_pem}"))?;
    let mut config = gatehouse_agent::tls::client_config(Some(&both))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];

    // The agent looks at the files at most once a second.
    let mut rotated = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let tls = agent.connect_with(config.clone()).await?;
        let cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().cloned());
        if cert.is_some_and(|c| c != first) {
            rotated = true;
            break;
        }
    }
    assert!(rotated, "new connections still get the old certificate");

    // The connection made before the rotation keeps working.
    let token = agent.token("alice");
    let raw = format!(
        "GET {PODS} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    old.write_all(raw.as_bytes()).await?;
    let resp = read_to_close(&mut old).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    Ok(())
}
