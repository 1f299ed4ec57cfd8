//! exec/attach over the WebSocket channel protocols (`v5`/`v4`/v1 `channel.k8s.io`, and
//! the base64 variants): demultiplex client messages, multiplex output, answer Pings,
//! write the status on channel 3, then Close(1000).

use super::exec::{self, Out, Outcome, SessionIo, SessionSpec};
use crate::emulator::runtime::ContainerRuntime;
use base64::Engine;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Subprotocols served, best first.
pub const PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// Properties of the negotiated subprotocol.
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    /// v4/v5: JSON Status on the error channel.
    pub json_status: bool,
    /// v5: `[255, ch]` half-close.
    pub close_channel: bool,
    /// Text messages, `'0'+ch` then base64.
    pub base64: bool,
}

impl Dialect {
    /// The dialect of a subprotocol name (`None` = v1 binary).
    pub fn of(protocol: Option<&str>) -> Self {
        let p = protocol.unwrap_or("channel.k8s.io");
        Self {
            json_status: p.starts_with("v4.") || p.starts_with("v5."),
            close_channel: p.starts_with("v5."),
            base64: p.contains("base64"),
        }
    }

    pub(super) fn encode(&self, ch: u8, data: &[u8]) -> Message {
        if self.base64 {
            let mut s = String::with_capacity(1 + data.len() * 4 / 3 + 4);
            s.push(char::from(b'0' + ch));
            s.push_str(&base64::engine::general_purpose::STANDARD.encode(data));
            Message::text(s)
        } else {
            let mut v = Vec::with_capacity(1 + data.len());
            v.push(ch);
            v.extend_from_slice(data);
            Message::binary(v)
        }
    }

    pub(super) fn decode(&self, msg: &Message) -> Option<(u8, Vec<u8>)> {
        match msg {
            Message::Binary(b) if !self.base64 => {
                let (ch, rest) = b.split_first()?;
                Some((*ch, rest.to_vec()))
            }
            Message::Text(t) if self.base64 => {
                let bytes = t.as_bytes();
                let (ch, rest) = bytes.split_first()?;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .ok()?;
                Some((ch.wrapping_sub(b'0'), data))
            }
            _ => None,
        }
    }
}

/// Runs one exec/attach session on an upgraded connection.
pub async fn run(
    ws: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
    dialect: Dialect,
    runtime: Arc<ContainerRuntime>,
    spec: SessionSpec,
) {
    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(64);
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Message>(16);
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(64);
    let (resize_tx, resize_rx) = mpsc::channel::<(u16, u16)>(8);
    let io = SessionIo {
        stdin: spec.stdin.then_some(stdin_rx),
        resize: spec.tty.then_some(resize_rx),
        out: out_tx,
    };

    // The client expects an empty message on the lowest writable channel first.
    let first = if spec.stdout {
        STDOUT
    } else if spec.stderr && !spec.tty {
        STDERR
    } else {
        ERROR
    };
    if sink.send(dialect.encode(first, &[])).await.is_err() {
        return;
    }

    // Reader: demultiplexes client messages; ends on Close, EOF or a protocol error.
    let reader = tokio::spawn(async move {
        let mut stdin_tx = Some(stdin_tx);
        let mut resize_buf = Vec::new();
        while let Some(msg) = source.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(error = %e, "websocket read");
                    break;
                }
            };
            match &msg {
                Message::Ping(p) => {
                    let _ = ctl_tx.send(Message::Pong(p.clone())).await;
                    continue;
                }
                Message::Pong(_) | Message::Frame(_) => continue,
                Message::Close(_) => break,
                _ => {}
            }
            let Some((ch, data)) = dialect.decode(&msg) else {
                tracing::warn!("websocket message in the wrong format; ending session");
                break;
            };
            match ch {
                STDIN => {
                    if let Some(tx) = &stdin_tx
                        && tx.send(Bytes::from(data)).await.is_err()
                    {
                        stdin_tx = None;
                    }
                }
                RESIZE => {
                    resize_buf.extend_from_slice(&data);
                    for size in exec::drain_resizes(&mut resize_buf) {
                        let _ = resize_tx.try_send(size);
                    }
                }
                CLOSE if dialect.close_channel => match data.as_slice() {
                    [STDIN] => stdin_tx = None,
                    [RESIZE] => {}
                    _ => {
                        tracing::warn!(?data, "invalid close message; ending session");
                        break;
                    }
                },
                other => tracing::debug!(channel = other, "ignoring message"),
            }
        }
    });

    let session = exec::run(runtime, spec, io);
    tokio::pin!(session);
    let mut reader = reader;
    // Writer: output and control frames until the session ends, or the client leaves.
    let outcome: Option<Outcome> = loop {
        tokio::select! {
            outcome = &mut session => break Some(outcome),
            Some(out) = out_rx.recv() => {
                let msg = match out {
                    Out::Stdout(b) => dialect.encode(STDOUT, &b),
                    Out::Stderr(b) => dialect.encode(STDERR, &b),
                };
                if sink.send(msg).await.is_err() { break None; }
            }
            Some(ctl) = ctl_rx.recv() => {
                if sink.send(ctl).await.is_err() { break None; }
            }
            _ = &mut reader => {
                // Client closed or vanished: without v5 close, keep running only while
                // output can still be delivered (stdin EOF semantics of v4).
                break None;
            }
        }
    };
    let Some(outcome) = outcome else {
        reader.abort();
        return;
    };
    // Drain output the session produced before it returned.
    while let Ok(out) = out_rx.try_recv() {
        let msg = match out {
            Out::Stdout(b) => dialect.encode(STDOUT, &b),
            Out::Stderr(b) => dialect.encode(STDERR, &b),
        };
        if sink.send(msg).await.is_err() {
            reader.abort();
            return;
        }
    }
    let status = if dialect.json_status {
        outcome.status_json()
    } else {
        outcome.status_text()
    };
    if !status.is_empty() {
        let _ = sink.send(dialect.encode(ERROR, &status)).await;
    }
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    // Give the client a moment to answer the Close, then drop the TCP connection.
    let _ = tokio::time::timeout(Duration::from_secs(2), &mut reader).await;
    reader.abort();
    let _ = sink.close().await;
}
