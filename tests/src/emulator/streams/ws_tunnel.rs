//! `SPDY/3.1+portforward.k8s.io`: turns a WebSocket whose binary messages carry a raw
//! SPDY byte stream (boundaries unaligned) into a plain byte stream, via an in-memory pipe.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The tunnelling subprotocol kubectl ≥ 1.31 offers for port-forward.
pub const PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// Spawns the bridge; the returned stream reads what the client sent and writes to it.
pub fn bridge<S>(ws: WebSocketStream<S>) -> DuplexStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(256 << 10);
    let (mut rd, mut wr) = tokio::io::split(theirs);
    let (mut sink, mut source) = ws.split();
    let (pong_tx, mut pong_rx) = tokio::sync::mpsc::channel::<Message>(8);
    tokio::spawn(async move {
        while let Some(msg) = source.next().await {
            match msg {
                Ok(Message::Binary(b)) => {
                    if wr.write_all(&b).await.is_err() {
                        break;
                    }
                }
                Ok(Message::Ping(p)) => {
                    let _ = pong_tx.send(Message::Pong(p)).await;
                }
                Ok(Message::Pong(_) | Message::Frame(_)) => {}
                // Close means EOF; text messages are a protocol error (client-go).
                Ok(Message::Close(_) | Message::Text(_)) | Err(_) => break,
            }
        }
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            tokio::select! {
                n = rd.read(&mut buf) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                },
                Some(p) = pong_rx.recv() => {
                    if sink.send(p).await.is_err() { return; }
                }
            }
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
        let _ = sink.close().await;
    });
    ours
}
