//! Port-forward over SPDY/3.1 (`portforward.k8s.io`), raw or tunnelled in WebSocket:
//! pairs each request's error and data streams, connects to the pod port on loopback and
//! copies bytes both ways; a failed connect is reported on the error stream.

use super::spdy_conn::{self, Event, Writer};
use crate::emulator::runtime::{ContainerRuntime, PodSpec};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The SPDY stream protocol name.
pub const PROTOCOL: &str = "portforward.k8s.io";

#[derive(Debug, Default)]
struct Pair {
    port: u16,
    error: Option<u32>,
    data: Option<u32>,
    started: bool,
}

/// Serves one port-forward connection until the client goes away.
pub async fn run<IO>(io: IO, runtime: Arc<ContainerRuntime>, pod: PodSpec)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (writer, mut events) = spdy_conn::start(io);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    // Client data for a data stream goes to its forwarding task.
    let mut data_tx: HashMap<u32, mpsc::Sender<Option<Bytes>>> = HashMap::new();
    while let Some(ev) = events.recv().await {
        match ev {
            Event::Stream { id, headers, .. } => {
                let stype = headers.get("streamtype").unwrap_or("").to_ascii_lowercase();
                let port = headers.get("port").and_then(|p| p.parse::<u16>().ok());
                let (Some(port), true) =
                    (port.filter(|p| *p > 0), stype == "data" || stype == "error")
                else {
                    tracing::warn!(id, stype, "rejecting port-forward stream");
                    writer
                        .frame(gatehouse_common::spdy::Frame::RstStream {
                            stream_id: id,
                            status: gatehouse_common::spdy::rst_status::PROTOCOL_ERROR,
                        })
                        .await;
                    continue;
                };
                // Without a requestid the kubelet pairs error = id with data = id - 2.
                let key = match headers.get("requestid") {
                    Some(r) => r.to_string(),
                    None if stype == "error" => format!("#{id}"),
                    None => format!("#{}", id + 2),
                };
                let pair = pairs.entry(key.clone()).or_default();
                pair.port = port;
                if stype == "error" {
                    pair.error = Some(id);
                } else {
                    pair.data = Some(id);
                }
                if let (Some(error), Some(data), false) = (pair.error, pair.data, pair.started) {
                    pair.started = true;
                    let (tx, rx) = mpsc::channel(64);
                    data_tx.insert(data, tx);
                    let target = runtime.forward_target(&pod.uid, port);
                    tokio::spawn(forward(
                        writer.clone(),
                        pod.clone(),
                        port,
                        target,
                        error,
                        data,
                        rx,
                    ));
                    pairs.remove(&key);
                }
            }
            Event::Data { id, data, fin } => {
                if let Some(tx) = data_tx.get(&id) {
                    if !data.is_empty() {
                        let _ = tx.send(Some(data)).await;
                    }
                    if fin {
                        let _ = tx.send(None).await;
                    }
                }
            }
            Event::Reset { id } => {
                // Dropping the sender ends the forward's upstream half.
                data_tx.remove(&id);
            }
        }
    }
    writer.close().await;
}

/// One forwarded connection.
async fn forward(
    writer: Writer,
    pod: PodSpec,
    port: u16,
    target: u16,
    error_id: u32,
    data_id: u32,
    mut rx: mpsc::Receiver<Option<Bytes>>,
) {
    let conn = match TcpStream::connect(("127.0.0.1", target)).await {
        Ok(c) => c,
        Err(e) => {
            // Worded like the kubelet (containerd's netns dial error).
            let msg = format!(
                "error forwarding port {port} to pod {}, uid : failed to execute portforward in network namespace \"/var/run/netns/cni-{}\": failed to connect to localhost:{port} inside namespace \"{}\", IPv4: dial tcp4 127.0.0.1:{target}: connect: {} IPv6 dial tcp6: address localhost: no suitable address ",
                pod.name,
                pod.uid,
                pod.name,
                errno_text(&e),
            );
            writer.data(error_id, msg.into_bytes(), true).await;
            writer.data(data_id, Bytes::new(), true).await;
            return;
        }
    };
    let (mut rd, mut wr) = conn.into_split();
    let up = async {
        while let Some(Some(chunk)) = rx.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !writer
                        .data(data_id, Bytes::copy_from_slice(&buf[..n]), false)
                        .await
                    {
                        break;
                    }
                }
            }
        }
        writer.data(data_id, Bytes::new(), true).await;
    };
    tokio::join!(up, down);
    writer.data(error_id, Bytes::new(), true).await;
}

fn errno_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => e.to_string(),
    }
}
