//! The real `gatehouse-agent` binary with `--spool-dir` and `--collector-url`: the audit
//! events of its requests reach an in-test ingest endpoint, also when the collector is
//! down while the agent is restarted (SIGTERM makes queued events durable first).

#[path = "spool_support/ingest.rs"]
#[allow(dead_code)]
mod ingest;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ingest::IngestServer;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;
const LIMIT: Duration = Duration::from_secs(60);

fn free_addr() -> Result<SocketAddr, std::io::Error> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// An upstream stand-in: every request `200 {}`.
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

/// A running agent process, killed on drop.
struct AgentProcess {
    child: Child,
    addr: SocketAddr,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AgentProcess {
    async fn start(
        dir: &Path,
        upstream: SocketAddr,
        collector: &str,
        collector_ca: &Path,
    ) -> Result<Self, BoxError> {
        let addr = free_addr()?;
        let key = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])?.self_signed(&key)?;
        std::fs::write(dir.join("tls.crt"), cert.pem())?;
        std::fs::write(dir.join("tls.key"), key.serialize_pem())?;
        std::fs::write(dir.join("sa-token"), "agent-sa-token")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("agent.log"))?;
        let child = Command::new(env!("CARGO_BIN_EXE_gatehouse-agent"))
            .arg(format!("--listen={addr}"))
            .arg(format!("--tls-cert={}", dir.join("tls.crt").display()))
            .arg(format!("--tls-key={}", dir.join("tls.key").display()))
            .arg(format!("--upstream-url=http://{upstream}"))
            .arg(format!(
                "--upstream-token-file={}",
                dir.join("sa-token").display()
            ))
            // Any readable CA will do: the upstream stand-in speaks plain HTTP.
            .arg(format!(
                "--upstream-ca-file={}",
                dir.join("tls.crt").display()
            ))
            // Never reached: every request of this test fails authentication, which is
            // still an audited request.
            .arg("--oidc-issuer-url=https://127.0.0.1:9")
            .arg("--ops-listen=off")
            .arg("--node-name=node-e2e")
            .arg(format!("--spool-dir={}", dir.join("spool").display()))
            .arg(format!("--collector-url={collector}"))
            .arg(format!("--collector-ca-file={}", collector_ca.display()))
            .arg("--ship-backoff-max=500ms")
            .arg("--drain-timeout=1s")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let mut agent = Self { child, addr };
        let deadline = tokio::time::Instant::now() + LIMIT;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if tokio::time::Instant::now() > deadline || agent.child.try_wait()?.is_some() {
                let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
                return Err(format!("agent did not start listening; log:\n{log}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(agent)
    }

    /// One request (bearer token that is no JWT: answered 401, audited).
    async fn request(&self, path: &str) -> Result<u16, BoxError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await?;
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(conn);
        let req = Request::get(format!("https://127.0.0.1{path}"))
            .header("authorization", "Bearer not-a-jwt")
            .body(Empty::<Bytes>::new())?;
        let resp =
            tokio::time::timeout(Duration::from_secs(10), sender.send_request(req)).await??;
        let code = resp.status().as_u16();
        let _ = resp.into_body().collect().await?;
        Ok(code)
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    async fn terminate(mut self) -> Result<(), BoxError> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        assert!(status.success());
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                assert!(status.success(), "agent exited with {status}");
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err("agent did not exit after SIGTERM".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The test trusts the agent's throwaway certificate without checking it.
#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_events_reach_the_collector_through_an_agent_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let tls = ingest::tls(dir.path())?;
    let upstream = upstream().await?;
    // The collector's address is fixed up front; it is down for the first agent run.
    let server = IngestServer::start(tls.server.clone(), None).await?;
    let collector = server.url();
    server.stop();

    let agent = AgentProcess::start(dir.path(), upstream, &collector, &tls.ca_file).await?;
    for i in 0..20 {
        assert_eq!(
            agent
                .request(&format!("/api/v1/namespaces/dev/pods/first-{i}"))
                .await?,
            401
        );
    }
    // SIGTERM: the spool makes every queued event durable before the process ends.
    agent.terminate().await?;

    let agent = AgentProcess::start(dir.path(), upstream, &collector, &tls.ca_file).await?;
    for i in 0..20 {
        assert_eq!(
            agent
                .request(&format!("/api/v1/namespaces/dev/pods/second-{i}"))
                .await?,
            401
        );
    }
    server.restart().await?;
    let arrived = server.wait(LIMIT, |s| s.committed() >= 40).await;
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    assert!(
        arrived,
        "only {} events arrived; agent log:\n{log}",
        server.committed()
    );
    assert_eq!(server.committed(), 40, "one event per request");
    let agents = server
        .state
        .agents
        .lock()
        .map(|a| a.clone())
        .unwrap_or_default();
    assert!(agents.contains("node-e2e"), "{agents:?}");
    assert!(!log.contains("not-a-jwt"), "a bearer token reached the log");
    agent.terminate().await?;
    Ok(())
}
