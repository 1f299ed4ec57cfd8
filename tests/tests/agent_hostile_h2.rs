//! Hostile HTTP/2 clients against the real `gatehouse-agent` over real TLS (ALPN h2),
//! with hand-written frames where a client library would refuse to misbehave: a header
//! list over the limit, streams beyond the concurrency limit, rapid reset, a CONTINUATION
//! flood, and slowloris clients that never send the preface or SETTINGS. Each is answered
//! or cut, and afterwards the agent is healthy: `/healthz` is ok and kubectl still works.
//!
//! Needs the binaries: `cargo build -p gatehouse-agent -p gatehouse-collector --bins`.

use anyhow::Context as _;
use bytes::{Buf, BytesMut};
use gatehouse_tests::harness::kubectl::Kubectl;
use gatehouse_tests::harness::stack::{Stack, StackOptions};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Upper bound of every wait in these tests, so none can hang.
const BOUND: Duration = Duration::from_secs(20);

/// The limits the stack's agent runs with here: small, so each is easy to cross.
const MAX_STREAMS: u32 = 4;
const MAX_HEADER_LIST: u32 = 16 * 1024;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

mod frame_type {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
}
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

mod reason {
    pub const CANCEL: u32 = 0x8;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

async fn stack(extra: &[&str]) -> anyhow::Result<(tempfile::TempDir, Stack)> {
    let dir = tempfile::tempdir()?;
    let mut options = StackOptions::new(dir.path());
    options.agent_args = [
        format!("--h2-max-concurrent-streams={MAX_STREAMS}"),
        format!("--h2-max-header-list-size={MAX_HEADER_LIST}"),
    ]
    .into_iter()
    .chain(extra.iter().map(|s| s.to_string()))
    .collect();
    let stack = Stack::start(options).await?;
    Ok((dir, stack))
}

fn agent_addr(stack: &Stack) -> String {
    stack
        .agent_url()
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string()
}

/// A TLS connection to the agent that negotiated h2.
async fn connect_h2(stack: &Stack) -> anyhow::Result<TlsStream<TcpStream>> {
    connect(stack, b"h2").await
}

/// A TLS connection to the agent that negotiated `alpn`.
async fn connect(stack: &Stack, alpn: &[u8]) -> anyhow::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(stack.ca_cert_path())?;
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(agent_addr(stack)).await?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?;
    let tls = tokio::time::timeout(
        BOUND,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await??;
    anyhow::ensure!(
        tls.get_ref().1.alpn_protocol() == Some(alpn),
        "agent did not negotiate {}",
        String::from_utf8_lossy(alpn)
    );
    Ok(tls)
}

/// One HTTP/2 frame as it goes on the wire.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), first byte's high bits `high`.
fn hpack_int(out: &mut Vec<u8>, high: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// One header as an HPACK "literal without indexing, new name", no Huffman: stateless, so
/// any number of them can be sent without a shared encoder.
fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    hpack_int(out, 0, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, 0, 7, value.len());
    out.extend_from_slice(value.as_bytes());
}

/// The header block of a GET for `path` (with a bearer token unless it is empty).
fn get_block(authority: &str, path: &str, token: &str) -> Vec<u8> {
    let mut block = Vec::new();
    hpack_literal(&mut block, ":method", "GET");
    hpack_literal(&mut block, ":scheme", "https");
    hpack_literal(&mut block, ":authority", authority);
    hpack_literal(&mut block, ":path", path);
    if !token.is_empty() {
        hpack_literal(&mut block, "authorization", &format!("Bearer {token}"));
    }
    block
}

/// A frame read from the agent.
#[derive(Debug)]
struct Frame {
    kind: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    /// The error code of RST_STREAM or GOAWAY.
    fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            frame_type::RST_STREAM => 0,
            frame_type::GOAWAY => 4,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// A raw HTTP/2 client: writes any bytes, reads frames, answers the agent's SETTINGS and
/// PINGs like a live peer would.
struct Raw {
    tls: TlsStream<TcpStream>,
    buf: BytesMut,
}

impl Raw {
    /// Connects and sends the preface and an empty SETTINGS.
    async fn start(stack: &Stack) -> anyhow::Result<Self> {
        let mut raw = Self {
            tls: connect_h2(stack).await?,
            buf: BytesMut::new(),
        };
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(frame_type::SETTINGS, 0, 0, &[]));
        raw.send(&hello).await?;
        Ok(raw)
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tls.write_all(bytes).await?;
        self.tls.flush().await
    }

    /// The next frame other than SETTINGS/PING (which are answered), or `None` once the
    /// agent closed the connection (EOF or reset).
    async fn next(&mut self) -> anyhow::Result<Option<Frame>> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let (kind, flags) = (self.buf[3], self.buf[4]);
                    let stream =
                        u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]])
                            & 0x7fff_ffff;
                    self.buf.advance(9);
                    let payload = self.buf.split_to(len).to_vec();
                    match (kind, flags & ACK) {
                        (frame_type::SETTINGS, 0) => {
                            let ack = frame(frame_type::SETTINGS, ACK, 0, &[]);
                            let _ = self.send(&ack).await;
                        }
                        (frame_type::SETTINGS, _) => {}
                        (frame_type::PING, 0) => {
                            let pong = frame(frame_type::PING, ACK, 0, &payload);
                            let _ = self.send(&pong).await;
                        }
                        (frame_type::PING, _) => {}
                        _ => {
                            return Ok(Some(Frame {
                                kind,
                                stream,
                                payload,
                            }));
                        }
                    }
                    continue;
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout(BOUND, self.tls.read(&mut chunk))
                .await
                .context("the agent neither answered nor closed the connection")?
            {
                Ok(0) | Err(_) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads frames until the agent closes the connection; returns the GOAWAY seen, if any.
    async fn until_closed(&mut self) -> anyhow::Result<Option<Frame>> {
        let mut goaway = None;
        while let Some(f) = self.next().await? {
            if f.kind == frame_type::GOAWAY {
                goaway = Some(f);
            }
        }
        Ok(goaway)
    }
}

/// A token the agent accepts (dev user alice).
fn alice_token(stack: &Stack) -> anyhow::Result<String> {
    stack
        .issuer
        .mint_dev("alice")
        .context("alice is a dev user")?
        .map_err(Into::into)
}

/// The agent still serves: `/healthz` on its ops port is ok, and kubectl through it works.
async fn assert_healthy(stack: &Stack) -> anyhow::Result<()> {
    let ops = stack.ops_addr.context("stack has an ops port")?;
    let mut tcp = tokio::time::timeout(BOUND, TcpStream::connect(ops)).await??;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: ops\r\nConnection: close\r\n\r\n")
        .await?;
    let mut resp = Vec::new();
    tokio::time::timeout(BOUND, tcp.read_to_end(&mut resp)).await??;
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "healthz: {resp}");
    let kubectl = Kubectl::v1_32(&stack.kubeconfig_for("alice")?)?;
    let out = kubectl.run(&["get", "pods", "-n", "dev"]).await?;
    assert_eq!(out.code, 0, "kubectl after the attack: {}", out.stderr);
    Ok(())
}

/// A header list over `--h2-max-header-list-size` gets 431 on its stream and nothing
/// reaches the API server; the same connection then serves a normal request.
#[tokio::test]
async fn header_list_over_the_limit_gets_431_and_the_connection_lives() -> anyhow::Result<()> {
    let (_dir, stack) = stack(&[]).await?;
    let token = alice_token(&stack)?;
    let tls = connect_h2(&stack).await?;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let uri = format!("{}/api/v1/namespaces/dev/pods", stack.agent_url());
    let big = "x".repeat(MAX_HEADER_LIST as usize * 2);
    let req = http::Request::get(&uri)
        .header("authorization", format!("Bearer {token}"))
        .header("x-padding", big)
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let resp = tokio::time::timeout(BOUND, send.send_request(req)).await??;
    assert_eq!(
        resp.status(),
        http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert!(
        stack.emulator.request_log().is_empty(),
        "an oversized request reached the API server"
    );
    let req = http::Request::get(&uri)
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let resp = tokio::time::timeout(BOUND, send.send_request(req)).await??;
    assert_eq!(resp.status(), http::StatusCode::OK);
    let body = tokio::time::timeout(BOUND, resp.into_body().collect()).await??;
    assert!(
        String::from_utf8_lossy(&body.to_bytes()).contains("PodList"),
        "not a pod list"
    );
    assert_healthy(&stack).await?;
    stack.shutdown().await;
    Ok(())
}

/// Streams opened beyond `SETTINGS_MAX_CONCURRENT_STREAMS` (ignoring the agent's SETTINGS)
/// are refused one by one with REFUSED_STREAM; the streams within the limit keep working.
#[tokio::test]
async fn streams_beyond_the_concurrency_limit_are_refused() -> anyhow::Result<()> {
    let (_dir, stack) = stack(&[]).await?;
    let token = alice_token(&stack)?;
    let authority = agent_addr(&stack);
    let mut raw = Raw::start(&stack).await?;
    // MAX_STREAMS watches stay open (half-closed remote) and fill the connection.
    let watch = get_block(&authority, "/api/v1/namespaces/dev/pods?watch=true", &token);
    let mut burst = Vec::new();
    let total = MAX_STREAMS + 6;
    for i in 0..total {
        burst.extend(frame(
            frame_type::HEADERS,
            END_HEADERS | END_STREAM,
            1 + 2 * i,
            &watch,
        ));
    }
    raw.send(&burst).await?;
    let mut refused = Vec::new();
    let mut answered = Vec::new();
    while refused.len() + answered.len() < total as usize {
        let f = raw
            .next()
            .await?
            .context("agent closed the connection instead of refusing streams")?;
        match f.kind {
            frame_type::RST_STREAM => {
                assert_eq!(f.error_code(), Some(reason::REFUSED_STREAM), "{f:?}");
                refused.push(f.stream);
            }
            frame_type::HEADERS => answered.push(f.stream),
            frame_type::GOAWAY => anyhow::bail!("connection-level error: {f:?}"),
            _ => {}
        }
    }
    assert_eq!(
        answered.len(),
        MAX_STREAMS as usize,
        "answered {answered:?}"
    );
    assert_eq!(refused.len(), 6, "refused {refused:?}");
    assert!(
        refused.iter().all(|id| *id > 2 * MAX_STREAMS),
        "a stream within the limit was refused: {refused:?}"
    );
    // Only the watches within the limit reached the API server.
    let watches = stack
        .emulator
        .request_log()
        .iter()
        .filter(|r| r.verb == "watch")
        .count();
    assert!(
        watches <= MAX_STREAMS as usize,
        "{watches} watches upstream"
    );
    assert_healthy(&stack).await?;
    stack.shutdown().await;
    Ok(())
}

/// Rapid reset (CVE-2023-44487): a client opening streams and resetting them at once is
/// told to calm down (GOAWAY ENHANCE_YOUR_CALM) and cut, long before its thousands of
/// requests are all handled.
#[tokio::test]
async fn rapid_reset_is_cut() -> anyhow::Result<()> {
    let (_dir, stack) = stack(&[]).await?;
    let token = alice_token(&stack)?;
    let authority = agent_addr(&stack);
    let mut raw = Raw::start(&stack).await?;
    let block = get_block(&authority, "/api/v1/namespaces/dev/pods", &token);
    const ATTEMPTS: u32 = 5_000;
    let mut cut_while_sending = false;
    for batch in 0..(ATTEMPTS / 100) {
        let mut bytes = Vec::new();
        for i in 0..100 {
            let id = 1 + 2 * (batch * 100 + i);
            bytes.extend(frame(
                frame_type::HEADERS,
                END_HEADERS | END_STREAM,
                id,
                &block,
            ));
            bytes.extend(frame(
                frame_type::RST_STREAM,
                0,
                id,
                &reason::CANCEL.to_be_bytes(),
            ));
        }
        if raw.send(&bytes).await.is_err() {
            cut_while_sending = true;
            break;
        }
    }
    let goaway = raw.until_closed().await?;
    if let Some(goaway) = &goaway {
        assert_eq!(
            goaway.error_code(),
            Some(reason::ENHANCE_YOUR_CALM),
            "{goaway:?}"
        );
    } else {
        assert!(
            cut_while_sending,
            "the connection was neither told off nor cut"
        );
    }
    let upstream = stack.emulator.request_log().len();
    assert!(
        upstream < (ATTEMPTS / 10) as usize,
        "{upstream} of {ATTEMPTS} reset requests reached the API server"
    );
    assert_healthy(&stack).await?;
    stack.shutdown().await;
    Ok(())
}

/// CONTINUATION flood (CVE-2024-27316 class): a header block that never ends is not
/// buffered without bound; the connection is cut with a GOAWAY.
#[tokio::test]
async fn continuation_flood_is_cut() -> anyhow::Result<()> {
    let (_dir, stack) = stack(&[]).await?;
    let authority = agent_addr(&stack);
    let mut raw = Raw::start(&stack).await?;
    let mut start = frame(
        frame_type::HEADERS,
        0,
        1,
        &get_block(&authority, "/version", ""),
    );
    let mut filler = Vec::new();
    hpack_literal(&mut filler, "x-flood", &"y".repeat(1000));
    for _ in 0..16 {
        start.extend(frame(frame_type::CONTINUATION, 0, 1, &filler));
    }
    raw.send(&start).await?;
    // Up to 64 MiB of CONTINUATION, never END_HEADERS: the agent must give up first.
    let chunk: Vec<u8> = (0..64)
        .flat_map(|_| frame(frame_type::CONTINUATION, 0, 1, &filler))
        .collect();
    let mut sent = 0usize;
    let mut cut_while_sending = false;
    while sent < 64 << 20 {
        match tokio::time::timeout(BOUND, raw.send(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            Ok(Err(_)) => {
                cut_while_sending = true;
                break;
            }
            Err(_) => anyhow::bail!("agent stopped reading without closing the connection"),
        }
    }
    let goaway = raw.until_closed().await?;
    assert!(
        cut_while_sending || goaway.is_some(),
        "agent swallowed {sent} bytes of one header block"
    );
    if let Some(goaway) = &goaway {
        assert_eq!(
            goaway.error_code(),
            Some(reason::ENHANCE_YOUR_CALM),
            "{goaway:?}"
        );
    }
    assert_healthy(&stack).await?;
    stack.shutdown().await;
    Ok(())
}

/// Slowloris before the first byte: TLS (ALPN h2 or http/1.1), then silence, or only a
/// part of the h2 preface. The agent closes the connection once the header-read timeout
/// has passed, instead of holding a connection slot forever.
#[tokio::test]
async fn client_that_never_sends_a_request_or_preface_is_cut() -> anyhow::Result<()> {
    let (_dir, stack) = stack(&["--header-read-timeout=2s", "--keep-alive-interval=2s"]).await?;
    let cases: [(&[u8], &[u8]); 3] = [(b"h2", b""), (b"h2", &PREFACE[..10]), (b"http/1.1", b"")];
    for (alpn, sent) in cases {
        let mut tls = connect(&stack, alpn).await?;
        tls.write_all(sent).await?;
        tls.flush().await?;
        let mut buf = [0u8; 1024];
        let end = tokio::time::timeout(BOUND, async {
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            end.is_ok(),
            "{} after {} bytes: the silent connection was held open",
            String::from_utf8_lossy(alpn),
            sent.len()
        );
    }
    assert_healthy(&stack).await?;
    stack.shutdown().await;
    Ok(())
}

/// h2 slowloris: the preface and then nothing (no SETTINGS, no request), and a client that
/// starts a request's header block and never finishes it. Both are cut by the keep-alive
/// (the agent pings; a client that never answers is dropped) within a bounded time.
#[tokio::test]
async fn h2_client_that_stalls_after_the_preface_or_mid_headers_is_cut() -> anyhow::Result<()> {
    let (_dir, stack) = stack(&["--header-read-timeout=2s", "--keep-alive-interval=2s"]).await?;
    let authority = agent_addr(&stack);
    for stall in ["after the preface", "mid header block"] {
        let mut tls = connect_h2(&stack).await?;
        let mut bytes = PREFACE.to_vec();
        if stall == "mid header block" {
            bytes.extend(frame(frame_type::SETTINGS, 0, 0, &[]));
            let block = get_block(&authority, "/version", "");
            let headers = frame(frame_type::HEADERS, END_STREAM, 1, &block);
            bytes.extend_from_slice(&headers[..headers.len() / 2]);
        }
        tls.write_all(&bytes).await?;
        tls.flush().await?;
        // Read (so the agent is never blocked writing) but answer nothing.
        let mut buf = [0u8; 1024];
        let end = tokio::time::timeout(BOUND, async {
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(end.is_ok(), "{stall}: the stalled connection was held open");
    }
    assert_healthy(&stack).await?;
    stack.shutdown().await;
    Ok(())
}

/// The hand-written encoders the tests rely on.
#[test]
fn frame_encoding_round_trips() {
    let f = frame(frame_type::DATA, END_STREAM, 3, b"abc");
    assert_eq!(f, [0, 0, 3, 0, 1, 0, 0, 0, 3, b'a', b'b', b'c']);
    let mut out = Vec::new();
    hpack_int(&mut out, 0, 7, 1337);
    // RFC 7541 C.1.2 uses a 5-bit prefix; with 7 bits 1337 = 127 + 1210 = 127, 0xba, 0x09.
    assert_eq!(out, [127, 0xba, 0x09]);
}
