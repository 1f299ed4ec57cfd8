//! A small in-test collector ingest endpoint (HTTP/2 over TLS, `common::ingest` frames)
//! that acks, refuses, stalls or drops connections on command, and keeps which event ids
//! it committed.

use bytes::{Bytes, BytesMut};
use gatehouse_common::ingest::{Ack, Batch, FrameDecoder, INGEST_PATH, encode_frame};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type RespBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What the endpoint does with each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Commit and ack.
    Ack,
    /// Answer `committed: false`.
    Refuse,
    /// Read batches, never ack.
    Stall,
}

/// Shared between the accept loop, the connections and the test.
pub struct State {
    mode: Mutex<Mode>,
    /// Committed event id → times it was committed (re-sends count again).
    committed: Mutex<HashMap<String, u32>>,
    /// Batches received (any mode).
    pub batches: AtomicU64,
    /// Batches refused.
    pub refused: AtomicU64,
    /// Ingest streams opened.
    pub streams: AtomicU64,
    /// Streams refused for a wrong or missing token.
    pub unauthorized: AtomicU64,
    /// Bearer token required (`None` = any).
    token: Option<String>,
    /// Batches whose `seq` was not the previous one + 1 (from 1) on their stream.
    pub seq_violations: AtomicU64,
    /// `agent` names seen in batches.
    pub agents: Mutex<std::collections::HashSet<String>>,
    /// Every event id received, in any mode (committed, refused or stalled).
    received: Mutex<std::collections::HashSet<String>>,
    /// Batches marked `fresh`.
    pub fresh_batches: AtomicU64,
    /// Events of `fresh` batches that had been received before: must stay 0 (a fresh
    /// batch lets the collector skip its duplicate check).
    pub fresh_repeats: AtomicU64,
}

/// The endpoint; [`IngestServer::stop`] kills the listener and every connection.
pub struct IngestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state (survives a restart).
    pub state: Arc<State>,
    tls: Arc<rustls::ServerConfig>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

/// A self-signed server certificate for 127.0.0.1 and the CA file that trusts it.
pub struct Tls {
    /// Server config (ALPN h2).
    pub server: Arc<rustls::ServerConfig>,
    /// PEM to pass as the shipper's CA file.
    pub ca_file: PathBuf,
}

/// Makes the TLS material in `dir`.
pub fn tls(dir: &std::path::Path) -> Result<Tls, BoxError> {
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])?.self_signed(&key)?;
    let (cert_path, key_path) = (dir.join("collector.crt"), dir.join("collector.key"));
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    let mut server = gatehouse_agent::tls::server_config(&cert_path, &key_path)?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Tls {
        server: Arc::new(server),
        ca_file: cert_path,
    })
}

impl IngestServer {
    /// Starts on a free loopback port.
    pub async fn start(
        tls: Arc<rustls::ServerConfig>,
        token: Option<&str>,
    ) -> Result<Self, BoxError> {
        let state = Arc::new(State {
            mode: Mutex::new(Mode::Ack),
            committed: Mutex::new(HashMap::new()),
            received: Mutex::new(std::collections::HashSet::new()),
            fresh_batches: AtomicU64::new(0),
            fresh_repeats: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            streams: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            token: token.map(str::to_string),
            agents: Mutex::new(std::collections::HashSet::new()),
            seq_violations: AtomicU64::new(0),
        });
        let mut server = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            state,
            tls,
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        server.addr = server.listen(server.addr).await?;
        Ok(server)
    }

    /// Listens on `addr` (port 0 = any); returns the bound address.
    async fn listen(&self, addr: SocketAddr) -> Result<SocketAddr, BoxError> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let (state, tls, tasks) = (self.state.clone(), self.tls.clone(), self.tasks.clone());
        let accept = tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            while let Ok((tcp, _)) = listener.accept().await {
                let (state, acceptor) = (state.clone(), acceptor.clone());
                let conn = tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| handle(req, state.clone()));
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                if let Ok(mut t) = tasks.lock() {
                    t.push(conn);
                }
            }
        });
        if let Ok(mut t) = self.tasks.lock() {
            t.push(accept);
        }
        Ok(bound)
    }

    /// Kills the listener and every connection (like a collector crash).
    pub fn stop(&self) {
        if let Ok(mut t) = self.tasks.lock() {
            for task in t.drain(..) {
                task.abort();
            }
        }
    }

    /// Starts again on the same port, with the same committed state.
    pub async fn restart(&self) -> Result<(), BoxError> {
        self.stop();
        // The aborted listener closes its socket once its task is dropped; retry briefly.
        let mut last = None;
        for _ in 0..50 {
            match self.listen(self.addr).await {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(last.unwrap_or_else(|| "restart failed".into()))
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Changes what happens to the next batches.
    pub fn set_mode(&self, mode: Mode) {
        if let Ok(mut m) = self.state.mode.lock() {
            *m = mode;
        }
    }

    /// Distinct event ids committed so far.
    pub fn committed(&self) -> usize {
        self.state.committed.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Committed ids that start with `prefix`... or all ids, for whole-run checks.
    #[allow(dead_code)]
    pub fn ids(&self) -> Vec<String> {
        self.state
            .committed
            .lock()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `id` was committed.
    pub fn has(&self, id: &str) -> bool {
        self.state
            .committed
            .lock()
            .map(|c| c.contains_key(id))
            .unwrap_or(false)
    }

    /// Waits (bounded) until `cond` holds; `false` on timeout.
    pub async fn wait(&self, limit: Duration, cond: impl Fn(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if cond(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cond(self)
    }
}

impl Drop for IngestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<RespBody>, Infallible> {
    let status = |code: StatusCode| {
        let mut resp = Response::new(http_body_util::Full::new(Bytes::from_static(b"no")).boxed());
        *resp.status_mut() = code;
        Ok(resp)
    };
    if req.uri().path() != INGEST_PATH || req.method() != http::Method::POST {
        return status(StatusCode::NOT_FOUND);
    }
    if let Some(token) = &state.token {
        let want = format!("Bearer {token}");
        let got = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if got != Some(want.as_str()) {
            state.unauthorized.fetch_add(1, Ordering::Relaxed);
            return status(StatusCode::UNAUTHORIZED);
        }
    }
    state.streams.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let mut body = req.into_body();
    tokio::spawn(async move {
        let mut decoder = FrameDecoder::new();
        let mut last_seq = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            let Some(data) = frame.data_ref() else {
                continue;
            };
            decoder.push(data);
            while let Ok(Some(batch)) = decoder.next_frame::<Batch>() {
                state.batches.fetch_add(1, Ordering::Relaxed);
                if batch.seq != last_seq + 1 {
                    state.seq_violations.fetch_add(1, Ordering::Relaxed);
                }
                last_seq = batch.seq;
                if let Ok(mut agents) = state.agents.lock() {
                    agents.insert(batch.agent.clone());
                }
                if batch.fresh {
                    state.fresh_batches.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok(mut received) = state.received.lock() {
                    for e in &batch.events {
                        if !received.insert(e.event_id().to_string()) && batch.fresh {
                            state.fresh_repeats.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                let mode = state.mode.lock().map(|m| *m).unwrap_or(Mode::Ack);
                let ack = match mode {
                    Mode::Stall => continue,
                    Mode::Refuse => {
                        state.refused.fetch_add(1, Ordering::Relaxed);
                        Ack {
                            seq: batch.seq,
                            committed: false,
                            inserted: 0,
                            error: "store unavailable".into(),
                        }
                    }
                    Mode::Ack => {
                        let mut inserted = 0;
                        if let Ok(mut c) = state.committed.lock() {
                            for e in &batch.events {
                                let n = c.entry(e.event_id().to_string()).or_insert(0);
                                if *n == 0 {
                                    inserted += 1;
                                }
                                *n += 1;
                            }
                        }
                        Ack {
                            seq: batch.seq,
                            committed: true,
                            inserted,
                            error: String::new(),
                        }
                    }
                };
                let mut out = BytesMut::new();
                if encode_frame(&ack, &mut out).is_err() || tx.send(out.freeze()).await.is_err() {
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|o| o.map(|b| Ok::<_, Infallible>(Frame::data(b))))
    });
    Ok(Response::new(StreamBody::new(stream).boxed()))
}
