//! Shared parts of the collector tests: audit events to ship and a ClickHouse row counter.

#![allow(dead_code)]

use gatehouse_common::audit::{
    ApiRequestEvent, AuditEvent, Decision, ExecParams, SessionEndEvent, SessionKind,
};
use gatehouse_tests::clickhouse::ClickHouse;

/// An API request event with a fresh id (`n` varies the user and the time).
pub fn api_event(n: u32) -> AuditEvent {
    let time = chrono::DateTime::from_timestamp(1_760_000_000 + i64::from(n), 250_000_000)
        .unwrap_or_default();
    AuditEvent::ApiRequest(ApiRequestEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        request_id: uuid::Uuid::new_v4().to_string(),
        time,
        cluster: "test".into(),
        node: "node-a".into(),
        user: format!("user{}@example.com", n % 3),
        groups: vec!["dev".into(), "o'brien \\ 'quoted'".into()],
        method: "GET".into(),
        path: "/api/v1/namespaces/default/pods".into(),
        verb: "list".into(),
        resource: "pods".into(),
        namespace: "default".into(),
        decision: Decision::Allow,
        status_code: 200,
        latency_ms: 1.5,
        ..ApiRequestEvent::default()
    })
}

/// A session end event with a fresh id.
pub fn session_event() -> AuditEvent {
    let started = chrono::DateTime::from_timestamp(1_760_000_100, 0).unwrap_or_default();
    AuditEvent::SessionEnd(SessionEndEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        session_id: uuid::Uuid::new_v4().to_string(),
        cluster: "test".into(),
        node: "node-a".into(),
        user: "user0@example.com".into(),
        kind: SessionKind::Exec,
        namespace: "default".into(),
        pod: "web-0".into(),
        exec: Some(ExecParams {
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            container: "web".into(),
            stdin: true,
            tty: true,
        }),
        started,
        ended: started + chrono::Duration::seconds(5),
        end_reason: "closed".into(),
        ..SessionEndEvent::default()
    })
}

/// `SELECT count()` of `database.table` (plain count: no FINAL, duplicates would show).
pub fn count(ch: &ClickHouse, database: &str, table: &str) -> anyhow::Result<u64> {
    Ok(ch
        .query(&format!("SELECT count() FROM `{database}`.`{table}`"))?
        .trim()
        .parse()?)
}

use bytes::Bytes;
use gatehouse_common::ingest::{Ack, Batch, FRAMES_CONTENT_TYPE, FrameDecoder, INGEST_PATH};
use gatehouse_tests::harness::ports::free_loopback_addr;
use gatehouse_tests::pki::{Ca, CertKeyPem};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// Bound on every single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(30);

/// Certificates of one test: the collector's server pair and the agent CA.
pub struct Pki {
    /// Directory holding the PEM files.
    pub dir: tempfile::TempDir,
    /// CA of the collector's serving certificate (clients trust it).
    pub server_ca: Ca,
    /// CA issuing agent client certificates (`--agent-ca-file`).
    pub agent_ca: Ca,
}

impl Pki {
    /// Fresh CAs and the collector's certificate, written to a temp dir.
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let server_ca = Ca::new("collector-ca")?;
        let agent_ca = Ca::new("agent-ca")?;
        server_ca
            .issue_server("collector", &[])?
            .write(dir.path(), "collector")?;
        agent_ca.write_cert(&dir.path().join("agent-ca.crt"))?;
        Ok(Self {
            dir,
            server_ca,
            agent_ca,
        })
    }

    /// The agent certificate for node `name`.
    pub fn agent(&self, name: &str) -> anyhow::Result<CertKeyPem> {
        Ok(self.agent_ca.issue_client(name, &[])?)
    }
}

/// The real `gatehouse-collector` binary with ingest on, killed on drop.
pub struct Collector {
    child: tokio::process::Child,
    /// Plain-HTTP ops listener (`/healthz`, `/metrics`).
    pub ops: SocketAddr,
    /// TLS ingest listener.
    pub ingest: SocketAddr,
    /// Its log (stdout + stderr).
    pub log: PathBuf,
}

fn collector_bin() -> anyhow::Result<PathBuf> {
    Ok(gatehouse_tests::harness::stack::find_bin_dir()?.join("gatehouse-collector"))
}

impl Collector {
    /// Starts the collector against ClickHouse `url`/`database` and waits until both
    /// listeners answer.
    pub async fn start(pki: &Pki, url: &str, database: &str) -> anyhow::Result<Self> {
        Self::start_with(pki, url, database, &[]).await
    }

    /// [`Collector::start`] with extra command-line arguments.
    pub async fn start_with(
        pki: &Pki,
        url: &str,
        database: &str,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        Self::start_on(pki, url, database, free_loopback_addr()?, extra).await
    }

    /// [`Collector::start_with`] with the ingest listener on `ingest` (a restarted
    /// collector comes back where the agents already point).
    pub async fn start_on(
        pki: &Pki,
        url: &str,
        database: &str,
        ingest: SocketAddr,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        let mut args = vec![
            format!("--clickhouse-url={url}"),
            format!("--clickhouse-database={database}"),
        ];
        args.extend(extra.iter().cloned());
        Self::spawn(pki, ingest, &args).await
    }

    /// The collector with the embedded store in `store_dir`, ingest on `ingest`.
    pub async fn start_embedded(
        pki: &Pki,
        store_dir: &std::path::Path,
        ingest: SocketAddr,
    ) -> anyhow::Result<Self> {
        Self::start_embedded_with(pki, store_dir, ingest, &[]).await
    }

    /// [`Collector::start_embedded`] with extra command-line arguments.
    pub async fn start_embedded_with(
        pki: &Pki,
        store_dir: &std::path::Path,
        ingest: SocketAddr,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        let mut args = vec![
            format!("--store-dir={}", store_dir.display()),
            // The test events are from 2025; the start-up prune must keep them.
            "--retention-days=25000".to_string(),
        ];
        args.extend(extra.iter().cloned());
        Self::spawn(pki, ingest, &args).await
    }

    async fn spawn(pki: &Pki, ingest: SocketAddr, store_args: &[String]) -> anyhow::Result<Self> {
        let ops = free_loopback_addr()?;
        let d = pki.dir.path();
        // A restarted collector appends to the same log (its first run's lines stay).
        let log = d.join(format!("collector-{}.log", ingest.port()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = tokio::process::Command::new(collector_bin()?)
            .arg(format!("--listen={ops}"))
            .arg(format!("--ingest-listen={ingest}"))
            .arg(format!(
                "--tls-cert-file={}",
                d.join("collector.crt").display()
            ))
            .arg(format!(
                "--tls-key-file={}",
                d.join("collector.key").display()
            ))
            .arg(format!(
                "--agent-ca-file={}",
                d.join("agent-ca.crt").display()
            ))
            .args(store_args)
            .arg("--store-timeout-secs=10")
            .arg("--max-in-flight=2")
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()?;
        let mut me = Self {
            child,
            ops,
            ingest,
            log,
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = me.child.try_wait()? {
                anyhow::bail!("collector exited ({status}):\n{}", me.log_text());
            }
            if http_get(ops, "/healthz").await.is_ok()
                && tokio::net::TcpStream::connect(ingest).await.is_ok()
            {
                return Ok(me);
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("collector did not start:\n{}", me.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The collector's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL (no shutdown path runs) and wait for the exit.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        tokio::time::timeout(WAIT, self.child.wait()).await??;
        Ok(())
    }

    /// SIGTERM and wait for the exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid)?),
                nix::sys::signal::Signal::SIGTERM,
            )?;
        }
        tokio::time::timeout(WAIT, self.child.wait()).await??;
        Ok(())
    }
}

/// `GET path` over plain HTTP/1.0: (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad HTTP answer: {text}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// A request body fed from a channel (the agent side of the stream).
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// A TLS client config trusting `ca_pem`, presenting `cert` if given, ALPN h2.
pub fn client_tls(ca_pem: &str, cert: Option<&CertKeyPem>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes())?)?;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let mut config = match cert {
        Some(c) => builder.with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(c.cert_pem.as_bytes())?],
            PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes())?,
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// An HTTP/2 connection to the collector's ingest listener (stands in for the shipper).
pub struct IngestClient {
    send: hyper::client::conn::http2::SendRequest<ChannelBody>,
    /// Bearer token sent on every stream (service-account authentication).
    pub bearer: Option<String>,
}

/// One open `POST /v1/ingest` stream.
pub struct IngestStream {
    tx: Option<mpsc::Sender<Bytes>>,
    /// Response status.
    pub status: u16,
    body: Incoming,
    decoder: FrameDecoder,
    ended: bool,
}

impl IngestClient {
    /// Connects over TLS with `config`.
    pub async fn connect(addr: SocketAddr, config: rustls::ClientConfig) -> anyhow::Result<Self> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let tls = tokio::time::timeout(
            WAIT,
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp),
        )
        .await??;
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { send, bearer: None })
    }

    /// Opens a stream and waits for the response head.
    pub async fn open(&mut self) -> anyhow::Result<IngestStream> {
        let (tx, rx) = mpsc::channel(16);
        let mut req = http::Request::post(format!("https://127.0.0.1{INGEST_PATH}"))
            .header(http::header::CONTENT_TYPE, FRAMES_CONTENT_TYPE);
        if let Some(token) = &self.bearer {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req.body(ChannelBody(rx))?;
        let resp = tokio::time::timeout(WAIT, self.send.send_request(req)).await??;
        Ok(IngestStream {
            tx: Some(tx),
            status: resp.status().as_u16(),
            body: resp.into_body(),
            decoder: FrameDecoder::new(),
            ended: false,
        })
    }
}

impl IngestStream {
    /// Sends raw bytes on the request body.
    pub async fn send_raw(&mut self, bytes: Bytes) -> anyhow::Result<()> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("request body already finished"))?;
        tokio::time::timeout(WAIT, tx.send(bytes))
            .await?
            .map_err(|_| anyhow::anyhow!("request body closed"))
    }

    /// Sends one batch frame.
    pub async fn send(&mut self, batch: &Batch) -> anyhow::Result<()> {
        self.send_raw(gatehouse_common::ingest::frame(batch)?).await
    }

    /// Ends the request body.
    pub fn finish(&mut self) {
        self.tx = None;
    }

    /// The next ack frame, or `None` when the response ended.
    pub async fn next_ack(&mut self) -> anyhow::Result<Option<Ack>> {
        loop {
            if let Some(ack) = self.decoder.next_frame::<Ack>()? {
                return Ok(Some(ack));
            }
            if self.ended {
                self.decoder.finish()?;
                return Ok(None);
            }
            match tokio::time::timeout(WAIT, self.body.frame()).await? {
                None => self.ended = true,
                Some(Err(err)) => {
                    // A reset after the last frame also ends the stream.
                    tracing::debug!(error = %err, "ingest response ended with an error");
                    self.ended = true;
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.decoder.push(&data);
                    }
                }
            }
        }
    }

    /// The whole response body as text (for non-200 answers).
    pub async fn text(self) -> anyhow::Result<String> {
        let bytes = tokio::time::timeout(WAIT, self.body.collect())
            .await??
            .to_bytes();
        Ok(String::from_utf8_lossy(&bytes).to_string())
    }
}

/// A batch of `events` from `agent`.
pub fn batch(agent: &str, seq: u64, events: &[AuditEvent]) -> Batch {
    Batch {
        agent: agent.into(),
        seq,
        events: events.to_vec(),
        fresh: false,
    }
}

/// The value of an unlabelled counter in a Prometheus text exposition.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
