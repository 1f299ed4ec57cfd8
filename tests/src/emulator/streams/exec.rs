//! Transport-independent exec/attach session: wires a process (or a container's main
//! process) to channels the WebSocket or SPDY transport fills and drains, and reports how
//! it ended as the remotecommand error-stream payload.

use crate::emulator::runtime::{
    ContainerRuntime, ContainerState, ExecOptions, LogStream, RuntimeError,
};
use bytes::Bytes;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Output of the session, in the order it must reach the client.
#[derive(Debug)]
pub enum Out {
    /// Bytes for the stdout stream.
    Stdout(Bytes),
    /// Bytes for the stderr stream.
    Stderr(Bytes),
}

/// The client side of a session, as the transport delivers it.
#[derive(Debug)]
pub struct SessionIo {
    /// stdin chunks; the sender dropping = stdin EOF. `None` = no stdin requested.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    /// Terminal sizes `(width, height)`.
    pub resize: Option<mpsc::Receiver<(u16, u16)>>,
    /// Where output goes.
    pub out: mpsc::Sender<Out>,
}

/// What the session asks for.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// Pod uid.
    pub pod_uid: String,
    /// Container name.
    pub container: String,
    /// `Some(argv)` for exec, `None` for attach.
    pub command: Option<Vec<String>>,
    /// stdin requested.
    pub stdin: bool,
    /// stdout requested.
    pub stdout: bool,
    /// stderr requested.
    pub stderr: bool,
    /// tty requested.
    pub tty: bool,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The process exited with this code.
    Exit(i32),
    /// It never ran, or the runtime failed.
    Failure(String),
}

impl Outcome {
    /// The v4/v5 error-stream payload: a `metav1.Status` without kind/apiVersion.
    pub fn status_json(&self) -> Vec<u8> {
        let v = match self {
            Outcome::Exit(0) => json!({"metadata": {}, "status": "Success"}),
            Outcome::Exit(code) => json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            Outcome::Failure(msg) => json!({
                "metadata": {},
                "status": "Failure",
                "message": msg,
                "reason": "InternalError",
                "code": 500,
            }),
        };
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// The v1–v3 error-stream payload: text, only on failure (empty = success).
    pub fn status_text(&self) -> Vec<u8> {
        match self {
            Outcome::Exit(0) => Vec::new(),
            Outcome::Exit(code) => {
                format!("command terminated with non-zero exit code: exit status {code}")
                    .into_bytes()
            }
            Outcome::Failure(msg) => msg.clone().into_bytes(),
        }
    }
}

/// Runs the session to its end.
pub async fn run(runtime: Arc<ContainerRuntime>, spec: SessionSpec, io: SessionIo) -> Outcome {
    match spec.command.clone() {
        Some(argv) => run_exec(&runtime, &spec, argv, io).await,
        None => run_attach(&runtime, &spec, io).await,
    }
}

async fn run_exec(
    runtime: &ContainerRuntime,
    spec: &SessionSpec,
    argv: Vec<String>,
    io: SessionIo,
) -> Outcome {
    let opts = ExecOptions {
        argv,
        stdin: spec.stdin,
        stdout: spec.stdout,
        stderr: spec.stderr && !spec.tty,
        tty: spec.tty,
    };
    let mut proc = match runtime.exec(&spec.pod_uid, &spec.container, opts) {
        Ok(p) => p,
        Err(e) => return Outcome::Failure(failure_message(&spec.container, &e)),
    };
    let stdin_task = match (proc.stdin.take(), io.stdin) {
        (Some(mut w), Some(mut rx)) => Some(tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if w.write_all(&chunk).await.is_err() {
                    break;
                }
                let _ = w.flush().await;
            }
            // Dropping `w` closes the pipe: the process sees EOF (v5 close / SPDY FIN).
            let _ = w.shutdown().await;
        })),
        _ => None,
    };
    let resize_task = match (proc.pty.clone(), io.resize) {
        (Some(pty), Some(mut rx)) => Some(tokio::spawn(async move {
            while let Some((w, h)) = rx.recv().await {
                if let Err(e) = pty.resize(w, h) {
                    tracing::debug!(error = %e, "resize");
                }
            }
        })),
        _ => None,
    };
    let mut readers = Vec::new();
    if let Some(r) = proc.stdout.take() {
        readers.push(tokio::spawn(copy_out(r, io.out.clone(), LogStream::Stdout)));
    }
    if let Some(r) = proc.stderr.take() {
        readers.push(tokio::spawn(copy_out(r, io.out.clone(), LogStream::Stderr)));
    }
    // If this future is dropped (client gone), dropping `proc` kills the process group.
    let code = proc.wait().await;
    // Output still in pipes (or held by background children) gets a bounded grace period.
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
    }
    if let Some(t) = stdin_task {
        t.abort();
    }
    if let Some(t) = resize_task {
        t.abort();
    }
    Outcome::Exit(code)
}

async fn copy_out(mut r: Box<dyn AsyncRead + Send + Unpin>, out: mpsc::Sender<Out>, s: LogStream) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let chunk = Bytes::copy_from_slice(&buf[..n]);
                let msg = match s {
                    LogStream::Stdout => Out::Stdout(chunk),
                    LogStream::Stderr => Out::Stderr(chunk),
                };
                if out.send(msg).await.is_err() {
                    break;
                }
            }
        }
    }
}

async fn run_attach(runtime: &ContainerRuntime, spec: &SessionSpec, io: SessionIo) -> Outcome {
    let mut handle = match runtime.attach(&spec.pod_uid, &spec.container, spec.stdin) {
        Ok(h) => h,
        Err(e) => return Outcome::Failure(failure_message(&spec.container, &e)),
    };
    let stdin_task = match (handle.stdin.take(), io.stdin) {
        (Some(shared), Some(mut rx)) => Some(tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                let mut guard = shared.lock().await;
                let Some(w) = guard.as_mut() else { break };
                if w.write_all(&chunk).await.is_err() {
                    break;
                }
                let _ = w.flush().await;
            }
            // The kubelet keeps the container's stdin open unless stdinOnce: so do we.
        })),
        _ => None,
    };
    let resize_task = match (handle.pty.clone(), io.resize) {
        (Some(pty), Some(mut rx)) => Some(tokio::spawn(async move {
            while let Some((w, h)) = rx.recv().await {
                let _ = pty.resize(w, h);
            }
        })),
        _ => None,
    };
    let outcome = loop {
        tokio::select! {
            msg = handle.output.recv() => match msg {
                Ok((LogStream::Stdout, b)) if spec.stdout => {
                    if io.out.send(Out::Stdout(b)).await.is_err() { break Outcome::Exit(0); }
                }
                Ok((LogStream::Stderr, b)) if spec.stderr => {
                    let m = if spec.tty { Out::Stdout(b) } else { Out::Stderr(b) };
                    if io.out.send(m).await.is_err() { break Outcome::Exit(0); }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break Outcome::Exit(0),
            },
            changed = handle.state.changed() => {
                let terminated = matches!(*handle.state.borrow(), ContainerState::Terminated { .. });
                if changed.is_err() || terminated { break Outcome::Exit(0); }
            }
        }
    };
    if let Some(t) = stdin_task {
        t.abort();
    }
    if let Some(t) = resize_task {
        t.abort();
    }
    outcome
}

fn failure_message(container: &str, e: &RuntimeError) -> String {
    match e {
        RuntimeError::ExecNotFound(_) | RuntimeError::ExecDenied(_) => format!(
            "Internal error occurred: error executing command in container: failed to exec in container: failed to start exec in {container:?}: {e}"
        ),
        other => other.to_string(),
    }
}

/// Decodes the resize stream: back-to-back JSON objects `{"Width":w,"Height":h}`,
/// possibly split anywhere. Consumes complete objects from `buf`.
pub fn drain_resizes(buf: &mut Vec<u8>) -> Vec<(u16, u16)> {
    #[derive(serde::Deserialize)]
    struct Size {
        #[serde(rename = "Width")]
        width: u16,
        #[serde(rename = "Height")]
        height: u16,
    }
    let mut out = Vec::new();
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<Size>();
    let mut consumed = 0;
    loop {
        match it.next() {
            Some(Ok(s)) => {
                consumed = it.byte_offset();
                out.push((s.width, s.height));
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(_)) => {
                // Garbage: drop everything seen so far rather than wedge the stream.
                consumed = buf.len();
                break;
            }
            None => {
                consumed = it.byte_offset();
                break;
            }
        }
    }
    buf.drain(..consumed);
    out
}
