//! exec/attach over SPDY/3.1 (remotecommand `channel.k8s.io` v1–v5): wait for the
//! client's streams (error, stdin, stdout, stderr, resize), run the session, then FIN
//! stdout/stderr, write the status and FIN on the error stream, GOAWAY.

use super::exec::{self, Out, SessionIo, SessionSpec};
use super::spdy_conn::{self, Event};
use crate::emulator::runtime::ContainerRuntime;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// Protocols served, best first (v5 over SPDY behaves like v4).
pub const PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// kubelet's `DefaultStreamCreationTimeout`.
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Error,
    Stdin,
    Stdout,
    Stderr,
    Resize,
}

/// Runs a session on an upgraded connection speaking `protocol`.
pub async fn run<IO>(io: IO, protocol: &str, runtime: Arc<ContainerRuntime>, spec: SessionSpec)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let json_status = protocol.starts_with("v4.") || protocol.starts_with("v5.");
    let resize_supported = !matches!(protocol, "channel.k8s.io" | "v2.channel.k8s.io");
    let (writer, mut events) = spdy_conn::start(io);
    let mut expected = vec![Kind::Error];
    if spec.stdin {
        expected.push(Kind::Stdin);
    }
    if spec.stdout {
        expected.push(Kind::Stdout);
    }
    if spec.stderr && !spec.tty {
        expected.push(Kind::Stderr);
    }
    if spec.tty && resize_supported {
        expected.push(Kind::Resize);
    }

    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(64);
    let (resize_tx, resize_rx) = mpsc::channel::<(u16, u16)>(8);
    let mut stdin_tx = Some(stdin_tx);
    let mut resize_buf = Vec::new();
    let mut ids: HashMap<Kind, u32> = HashMap::new();
    let mut kinds: HashMap<u32, Kind> = HashMap::new();

    // Phase 1: collect the streams kubectl creates, one after the other.
    let deadline = tokio::time::Instant::now() + STREAM_TIMEOUT;
    while expected.iter().any(|k| !ids.contains_key(k)) {
        let ev = match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => return,
            Err(_) => {
                tracing::warn!("timed out waiting for spdy streams");
                writer.close().await;
                return;
            }
        };
        if let Event::Stream { id, headers, .. } = ev {
            let kind = match headers
                .get("streamtype")
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("error") => Kind::Error,
                Some("stdin") => Kind::Stdin,
                Some("stdout") => Kind::Stdout,
                Some("stderr") => Kind::Stderr,
                Some("resize") => Kind::Resize,
                other => {
                    tracing::warn!(?other, "unexpected spdy stream type");
                    continue;
                }
            };
            ids.insert(kind, id);
            kinds.insert(id, kind);
        }
    }

    let (out_tx, mut out_rx) = mpsc::channel::<Out>(64);
    let io = SessionIo {
        stdin: spec.stdin.then_some(stdin_rx),
        resize: ids.contains_key(&Kind::Resize).then_some(resize_rx),
        out: out_tx,
    };
    let session = exec::run(runtime, spec, io);
    tokio::pin!(session);
    let stdout_id = ids.get(&Kind::Stdout).copied();
    let stderr_id = ids.get(&Kind::Stderr).copied();
    let send_out = async |out: Out| -> bool {
        let (id, b) = match out {
            Out::Stdout(b) => (stdout_id, b),
            Out::Stderr(b) => (stderr_id, b),
        };
        match id {
            Some(id) => writer.data(id, b, false).await,
            None => true,
        }
    };

    // Phase 2: run, routing client data and session output.
    let outcome = loop {
        tokio::select! {
            outcome = &mut session => break Some(outcome),
            Some(out) = out_rx.recv() => { if !send_out(out).await { break None; } }
            ev = events.recv() => match ev {
                None => break None,
                Some(Event::Data { id, data, fin }) => match kinds.get(&id) {
                    Some(Kind::Stdin) => {
                        if !data.is_empty() && let Some(tx) = &stdin_tx {
                            let _ = tx.send(data).await;
                        }
                        if fin { stdin_tx = None; }
                    }
                    Some(Kind::Resize) => {
                        resize_buf.extend_from_slice(&data);
                        for size in exec::drain_resizes(&mut resize_buf) {
                            let _ = resize_tx.try_send(size);
                        }
                    }
                    _ => {}
                },
                Some(Event::Reset { id }) => {
                    if kinds.get(&id) == Some(&Kind::Stdin) { stdin_tx = None; }
                }
                Some(Event::Stream { .. }) => {}
            },
        }
    };
    let Some(outcome) = outcome else {
        writer.close().await;
        return;
    };
    while let Ok(out) = out_rx.try_recv() {
        send_out(out).await;
    }
    for id in [stdout_id, stderr_id].into_iter().flatten() {
        writer.data(id, Bytes::new(), true).await;
    }
    if let Some(&id) = ids.get(&Kind::Error) {
        let status = if json_status {
            outcome.status_json()
        } else {
            outcome.status_text()
        };
        if !status.is_empty() {
            writer.data(id, status, false).await;
        }
        writer.data(id, Bytes::new(), true).await;
    }
    writer.close().await;
}
