//! Legacy WebSocket port-forward (`GET …/portforward?ports=a,b`, `v4.channel.k8s.io` or
//! the v1/base64 variants; not used by kubectl): port *i* gets data channel 2i and error
//! channel 2i+1, each opened with the port as 2 little-endian bytes.

use super::websocket::Dialect;
use crate::emulator::runtime::{ContainerRuntime, PodSpec};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// Subprotocols accepted for the channel form, best first.
pub const PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// Serves the session until the client closes or every forwarded connection ended.
pub async fn run<S>(
    ws: WebSocketStream<S>,
    dialect: Dialect,
    runtime: Arc<ContainerRuntime>,
    pod: PodSpec,
    ports: Vec<u16>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    let mut upstream: Vec<Option<mpsc::Sender<Vec<u8>>>> = Vec::new();
    for (i, port) in ports.iter().copied().enumerate() {
        // Channel numbers are one byte: at most 128 ports per session.
        let Ok(data_ch) = u8::try_from(2 * i) else {
            break;
        };
        let error_ch = data_ch.wrapping_add(1);
        let _ = sink
            .send(dialect.encode(data_ch, &port.to_le_bytes()))
            .await;
        let _ = sink
            .send(dialect.encode(error_ch, &port.to_le_bytes()))
            .await;
        let target = runtime.forward_target(&pod.uid, port);
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
        upstream.push(Some(tx));
        let out = out_tx.clone();
        let pod_name = pod.name.clone();
        tokio::spawn(async move {
            let conn = match TcpStream::connect(("127.0.0.1", target)).await {
                Ok(c) => c,
                Err(e) => {
                    let msg = format!(
                        "error forwarding port {port} to pod {pod_name}: dial tcp4 127.0.0.1:{target}: {e}"
                    );
                    let _ = out.send(dialect.encode(error_ch, msg.as_bytes())).await;
                    return;
                }
            };
            let (mut rd, mut wr) = conn.into_split();
            let up = async {
                while let Some(chunk) = rx.recv().await {
                    if wr.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                let _ = wr.shutdown().await;
            };
            let down = async {
                let mut buf = vec![0u8; 32 << 10];
                while let Ok(n) = rd.read(&mut buf).await {
                    if n == 0 || out.send(dialect.encode(data_ch, &buf[..n])).await.is_err() {
                        break;
                    }
                }
            };
            tokio::join!(up, down);
        });
    }
    drop(out_tx);
    loop {
        tokio::select! {
            out = out_rx.recv() => match out {
                Some(m) => if sink.send(m).await.is_err() { return; },
                None => break,
            },
            msg = source.next() => match msg {
                Some(Ok(Message::Ping(p))) => { let _ = sink.send(Message::Pong(p)).await; }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(m)) => {
                    let Some((ch, data)) = dialect.decode(&m) else { continue };
                    // Client writes go to even (data) channels only.
                    if ch % 2 == 0
                        && let Some(Some(tx)) = upstream.get(usize::from(ch / 2))
                        && tx.send(data).await.is_err()
                    {
                        upstream[usize::from(ch / 2)] = None;
                    }
                }
            },
        }
    }
    let _ = sink.close().await;
}
