//! A minimal SPDY/3.1 client on `gatehouse_common::spdy`, speaking like client-go: HTTP/1.1
//! upgrade, odd stream IDs, SYN_STREAM per stream, DATA, FIN.

use bytes::{Bytes, BytesMut};
use gatehouse_common::spdy::{Decoder, Encoder, Frame, Headers};
use std::collections::HashMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Writes the upgrade request and reads the response head; returns (status, headers).
pub async fn upgrade<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    method: &str,
    path: &str,
    protocols: &[&str],
) -> (u16, Vec<(String, String)>) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n"
    );
    for p in protocols {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("\r\n");
    io.write_all(req.as_bytes()).await.expect("write request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if io.read(&mut byte).await.expect("read head") == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    (status, headers)
}

/// Frames received, per stream.
#[derive(Debug, Default)]
pub struct StreamData {
    pub data: Vec<u8>,
    pub fin: bool,
    pub reset: bool,
    pub replied: bool,
}

/// The client side of a SPDY session.
pub struct Client<IO> {
    pub io: IO,
    enc: Encoder,
    dec: Decoder,
    next_id: u32,
    pub streams: HashMap<u32, StreamData>,
    pub goaway: bool,
    pub pings: Vec<u32>,
    pub eof: bool,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Client<IO> {
    pub fn new(io: IO) -> Self {
        Self {
            io,
            enc: Encoder::new(),
            dec: Decoder::new(),
            next_id: 1,
            streams: HashMap::new(),
            goaway: false,
            pings: Vec::new(),
            eof: false,
        }
    }

    pub async fn send(&mut self, frame: Frame) {
        let mut buf = BytesMut::new();
        self.enc.encode(&frame, &mut buf).expect("encode");
        self.io.write_all(&buf).await.expect("write frame");
        self.io.flush().await.expect("flush");
    }

    /// Opens a stream with `pairs` as headers and waits for its SYN_REPLY.
    pub async fn open(&mut self, pairs: &[(&str, &str)]) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        let mut headers = Headers::new();
        for (k, v) in pairs {
            headers = headers.with(*k, *v);
        }
        self.send(Frame::SynStream {
            stream_id: id,
            associated_id: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers,
        })
        .await;
        while !self.streams.get(&id).is_some_and(|s| s.replied) {
            assert!(self.read_some().await, "connection closed before SYN_REPLY");
        }
        id
    }

    pub async fn data(&mut self, id: u32, data: &[u8], fin: bool) {
        self.send(Frame::data(id, Bytes::copy_from_slice(data), fin))
            .await;
    }

    /// Reads once and records frames; false at EOF.
    pub async fn read_some(&mut self) -> bool {
        let mut buf = vec![0u8; 16 << 10];
        let n = self.io.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            self.eof = true;
            return false;
        }
        self.dec.feed(&buf[..n]);
        while let Some(frame) = self.dec.next_frame().expect("server sent a bad frame") {
            match frame {
                Frame::SynReply { stream_id, .. } => {
                    self.streams.entry(stream_id).or_default().replied = true
                }
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                } => {
                    let s = self.streams.entry(stream_id).or_default();
                    s.data.extend_from_slice(&data);
                    s.fin |= flags & gatehouse_common::spdy::FLAG_FIN != 0;
                }
                Frame::RstStream { stream_id, .. } => {
                    self.streams.entry(stream_id).or_default().reset = true
                }
                Frame::GoAway { .. } => self.goaway = true,
                Frame::Ping { id } => self.pings.push(id),
                _ => {}
            }
        }
        true
    }

    /// Reads until `done` holds or the connection ends.
    pub async fn read_until(&mut self, done: impl Fn(&Self) -> bool) {
        while !done(self) {
            if !self.read_some().await {
                return;
            }
        }
    }

    pub fn stream(&self, id: u32) -> &StreamData {
        static EMPTY: std::sync::OnceLock<StreamData> = std::sync::OnceLock::new();
        self.streams
            .get(&id)
            .unwrap_or_else(|| EMPTY.get_or_init(StreamData::default))
    }
}
