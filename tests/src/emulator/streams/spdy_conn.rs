//! A server-side SPDY/3.1 connection over any byte stream, spdystream-compatible: accepts
//! every SYN_STREAM with an empty SYN_REPLY, echoes client PINGs, ignores flow control,
//! and hands stream events to the session logic. One writer task owns the encoder.

use bytes::{Bytes, BytesMut};
use gatehouse_common::spdy::{Decoder, Encoder, Frame, Headers, goaway_status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// What the client did.
#[derive(Debug)]
pub enum Event {
    /// A new stream (already replied to).
    Stream {
        /// Stream ID.
        id: u32,
        /// Its headers.
        headers: Headers,
        /// FIN on the SYN_STREAM itself.
        fin: bool,
    },
    /// DATA on a stream (`fin` = half-closed by the client).
    Data {
        /// Stream ID.
        id: u32,
        /// Payload.
        data: Bytes,
        /// FIN flag.
        fin: bool,
    },
    /// RST_STREAM from the client.
    Reset {
        /// Stream ID.
        id: u32,
    },
}

/// Frames queued for the socket before senders wait: bounds memory when the client
/// reads slowly (DATA frames are at most 32 KiB each).
const WRITE_QUEUE: usize = 1024;

/// Sends frames to the client (clone freely; order is preserved per sender).
#[derive(Debug, Clone)]
pub struct Writer {
    tx: mpsc::Sender<Cmd>,
}

#[derive(Debug)]
enum Cmd {
    Frame(Frame),
    /// GOAWAY then shut the write side down.
    Close,
}

impl Writer {
    /// DATA on `id`.
    /// False once the connection is gone.
    pub async fn data(&self, id: u32, data: impl Into<Bytes>, fin: bool) -> bool {
        self.frame(Frame::data(id, data, fin)).await
    }

    /// Any frame; false once the connection is gone.
    pub async fn frame(&self, f: Frame) -> bool {
        self.tx.send(Cmd::Frame(f)).await.is_ok()
    }

    /// GOAWAY and close the connection once queued frames are written.
    pub async fn close(&self) {
        let _ = self.tx.send(Cmd::Close).await;
    }
}

/// Starts the connection; returns the frame writer and the client's events. The event
/// channel ends when the client closes the connection, sends GOAWAY or sends garbage.
pub fn start<IO>(io: IO) -> (Writer, mpsc::Receiver<Event>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Cmd>(WRITE_QUEUE);
    let (ev_tx, ev_rx) = mpsc::channel::<Event>(64);
    let writer = Writer { tx: cmd_tx };

    let last_seen = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let last_seen_w = last_seen.clone();
    tokio::spawn(async move {
        let mut enc = Encoder::new();
        let mut buf = BytesMut::new();
        while let Some(cmd) = cmd_rx.recv().await {
            let close = matches!(cmd, Cmd::Close);
            let frame = match cmd {
                Cmd::Frame(f) => f,
                Cmd::Close => Frame::GoAway {
                    last_good_stream_id: last_seen_w.load(std::sync::atomic::Ordering::Relaxed),
                    status: goaway_status::OK,
                },
            };
            buf.clear();
            if let Err(e) = enc.encode(&frame, &mut buf) {
                tracing::warn!(error = %e, "spdy encode");
                break;
            }
            if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
                break;
            }
            if close {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });

    let reply = writer.clone();
    tokio::spawn(async move {
        let mut dec = Decoder::new();
        let mut buf = vec![0u8; 32 << 10];
        'outer: loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            dec.feed(&buf[..n]);
            loop {
                let frame = match dec.next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "malformed spdy input; ending session");
                        break 'outer;
                    }
                };
                let ev = match frame {
                    Frame::SynStream {
                        stream_id,
                        flags,
                        headers,
                        ..
                    } => {
                        last_seen.fetch_max(stream_id, std::sync::atomic::Ordering::Relaxed);
                        reply
                            .frame(Frame::SynReply {
                                stream_id,
                                flags: 0,
                                headers: Headers::new(),
                            })
                            .await;
                        Event::Stream {
                            id: stream_id,
                            headers,
                            fin: flags & gatehouse_common::spdy::FLAG_FIN != 0,
                        }
                    }
                    Frame::Data {
                        stream_id,
                        flags,
                        data,
                    } => Event::Data {
                        id: stream_id,
                        data,
                        fin: flags & gatehouse_common::spdy::FLAG_FIN != 0,
                    },
                    Frame::RstStream { stream_id, .. } => Event::Reset { id: stream_id },
                    Frame::Ping { id } => {
                        // Echo the peer's PINGs (odd from a client); ours would be even.
                        if id % 2 == 1 {
                            reply.frame(Frame::Ping { id }).await;
                        }
                        continue;
                    }
                    Frame::GoAway { .. } => break 'outer,
                    // spdystream ignores these; so do we (no flow control enforced).
                    _ => continue,
                };
                if ev_tx.send(ev).await.is_err() {
                    break 'outer;
                }
            }
        }
    });
    (writer, ev_rx)
}
