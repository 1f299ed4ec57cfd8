//! The last words of a session the agent ends itself (shutdown): kubectl gets a
//! `v1.Status` on the remotecommand error channel (WebSocket channel 3, or the SPDY error
//! stream) and a clean close, so it exits non-zero and prints why instead of a bare EOF.
//!
//! The relay stays a byte relay: this module only follows frame boundaries (headers, not
//! payloads) so the agent's frames can be put between the API server's, never inside one.

use crate::status::ProxyError;
use base64::Engine as _;
use gatehouse_common::spdy::{Decoder, Encoder, Frame, goaway_status};
use http::HeaderMap;

/// What kubectl prints (after `error: `) when the agent ends its session on shutdown.
pub const SHUTDOWN_MESSAGE: &str = "gateway restarting: the Gatehouse agent ended this session \
     because it is shutting down; run the command again";

/// Largest SPDY control frame the client side is followed through (a SYN_STREAM is tiny;
/// anything bigger is not spdystream and the goodbye is given up, never the session).
const MAX_CONTROL_FRAME: usize = 64 << 10;

/// WebSocket close code sent after the message: normal closure, so kubectl's readers see
/// EOF (a 1001 would be reported as a read error instead of the message).
const WS_CLOSE_NORMAL: u16 = 1000;

/// Sees bytes of one direction, in order.
pub(crate) trait Observe {
    /// Called with every byte, split anywhere.
    fn observe(&mut self, data: &[u8]);
}

/// How the error channel carries its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorFormat {
    /// `v4`/`v5.channel.k8s.io`: a `v1.Status` JSON.
    Status,
    /// `channel.k8s.io` up to `v3`: the plain message.
    Text,
}

/// The upgrade's wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    /// WebSocket; `base64` for the `*.base64.channel.k8s.io` text subprotocols.
    WebSocket { base64: bool },
    /// SPDY/3.1.
    Spdy,
}

/// Follows one session's framing so that a goodbye can be sent at shutdown.
#[derive(Debug)]
pub(crate) struct Goodbye {
    wire: Wire,
    format: ErrorFormat,
    /// Bytes kubectl sent (SPDY: where its error stream is).
    pub(crate) client: ClientFrames,
    /// Bytes written to kubectl (where the API server's frames end).
    pub(crate) upstream: FrameCursor,
}

impl Goodbye {
    /// A goodbye for an exec/attach session, from the API server's 101 headers; `None` for
    /// protocols without an error channel (port-forward) or with WebSocket extensions
    /// (compressed frames could not be written in between).
    pub(crate) fn for_upgrade(headers: &HeaderMap) -> Option<Self> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let upgrade = header("upgrade")?.trim();
        let (wire, protocol) = if upgrade.eq_ignore_ascii_case("websocket") {
            if headers.contains_key("sec-websocket-extensions") {
                return None;
            }
            let protocol = header("sec-websocket-protocol")?.trim();
            let base64 = protocol.contains(".base64.");
            (Wire::WebSocket { base64 }, protocol)
        } else if upgrade.eq_ignore_ascii_case("spdy/3.1") {
            (Wire::Spdy, header("x-stream-protocol-version")?.trim())
        } else {
            return None;
        };
        let format = match protocol {
            "v5.channel.k8s.io"
            | "v4.channel.k8s.io"
            | "v5.base64.channel.k8s.io"
            | "v4.base64.channel.k8s.io" => ErrorFormat::Status,
            // Over WebSocket, client-go speaks only v4 and later; older ones are left alone.
            "v3.channel.k8s.io" | "v2.channel.k8s.io" | "channel.k8s.io" if wire == Wire::Spdy => {
                ErrorFormat::Text
            }
            _ => return None,
        };
        let cursor = match wire {
            Wire::WebSocket { .. } => CursorKind::WebSocket,
            Wire::Spdy => CursorKind::Spdy,
        };
        Some(Self {
            wire,
            format,
            client: ClientFrames::new(wire == Wire::Spdy),
            upstream: FrameCursor::new(cursor),
        })
    }

    /// The bytes to write to kubectl now, or `None` if no goodbye can be said (the API
    /// server's last frame is incomplete, or the framing could not be followed).
    pub(crate) fn farewell(&self, message: &str) -> Option<Vec<u8>> {
        if !self.upstream.at_frame_boundary() {
            return None;
        }
        let payload = match self.format {
            ErrorFormat::Status => {
                let status = ProxyError::UpstreamUnavailable(message.to_string()).to_status();
                serde_json::to_vec(&status).ok()?
            }
            ErrorFormat::Text => message.as_bytes().to_vec(),
        };
        match self.wire {
            Wire::WebSocket { base64 } => {
                let mut out = Vec::new();
                // A data message may not start inside a fragmented one; the close may.
                if !self.upstream.mid_message {
                    if base64 {
                        let mut text = b"3".to_vec();
                        text.extend_from_slice(
                            base64::engine::general_purpose::STANDARD
                                .encode(&payload)
                                .as_bytes(),
                        );
                        ws_frame(&mut out, WS_TEXT, &text);
                    } else {
                        let mut binary = vec![ERROR_CHANNEL];
                        binary.extend_from_slice(&payload);
                        ws_frame(&mut out, WS_BINARY, &binary);
                    }
                }
                let mut close = WS_CLOSE_NORMAL.to_be_bytes().to_vec();
                close.extend_from_slice(b"agent shutting down");
                ws_frame(&mut out, WS_CLOSE, &close);
                Some(out)
            }
            Wire::Spdy => {
                let mut frames = Vec::new();
                if let Some(error) = self.client.error_stream {
                    frames.push(Frame::data(error, payload, true));
                    // End kubectl's other streams too, so its output copies finish and it
                    // reads the error.
                    for &id in self.client.streams.iter().filter(|&&id| id != error) {
                        frames.push(Frame::data(id, Vec::new(), true));
                    }
                }
                frames.push(Frame::GoAway {
                    last_good_stream_id: self.client.streams.iter().copied().max().unwrap_or(0),
                    status: goaway_status::OK,
                });
                // DATA and GOAWAY carry no header block: a fresh encoder is in sync.
                let mut encoder = Encoder::new();
                let mut out = bytes::BytesMut::new();
                for frame in &frames {
                    encoder.encode(frame, &mut out).ok()?;
                }
                Some(out.to_vec())
            }
        }
    }
}

/// remotecommand's error channel number (WebSocket v4/v5).
const ERROR_CHANNEL: u8 = 3;
const WS_TEXT: u8 = 0x1;
const WS_BINARY: u8 = 0x2;
const WS_CLOSE: u8 = 0x8;

/// Appends one final, unmasked (server-to-client) WebSocket frame.
fn ws_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CursorKind {
    WebSocket,
    Spdy,
}

/// Follows frame boundaries of one direction from the frame headers alone.
#[derive(Debug)]
pub(crate) struct FrameCursor {
    kind: CursorKind,
    head: [u8; 14],
    have: usize,
    payload_left: u64,
    /// WebSocket: inside a fragmented data message (after a non-final data frame).
    mid_message: bool,
    /// The bytes did not parse as this framing; nothing is inserted any more.
    lost: bool,
}

impl FrameCursor {
    fn new(kind: CursorKind) -> Self {
        Self {
            kind,
            head: [0; 14],
            have: 0,
            payload_left: 0,
            mid_message: false,
            lost: false,
        }
    }

    /// True between two frames (a new frame may be written here).
    pub(crate) fn at_frame_boundary(&self) -> bool {
        !self.lost && self.have == 0 && self.payload_left == 0
    }

    /// True if the framing can no longer be followed.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost
    }

    /// How many more bytes of this direction belong to the current frame, at most (0 at a
    /// boundary): reading no more than this never reads past the frame's end.
    pub(crate) fn bytes_to_boundary(&self) -> u64 {
        if self.at_frame_boundary() || self.lost {
            0
        } else if self.payload_left > 0 {
            self.payload_left
        } else {
            1 // inside a header: its length is known only byte by byte
        }
    }

    /// Total header length once enough of it is known.
    fn header_len(&self) -> Option<usize> {
        match self.kind {
            CursorKind::Spdy => Some(8),
            CursorKind::WebSocket => {
                if self.have < 2 {
                    return None;
                }
                let ext = match self.head[1] & 0x7f {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                let mask = if self.head[1] & 0x80 != 0 { 4 } else { 0 };
                Some(2 + ext + mask)
            }
        }
    }

    /// Reads the complete header at `head[..have]`.
    fn header_done(&mut self) {
        match self.kind {
            CursorKind::Spdy => {
                self.payload_left = u64::from(u32::from_be_bytes([
                    0,
                    self.head[5],
                    self.head[6],
                    self.head[7],
                ]));
            }
            CursorKind::WebSocket => {
                let opcode = self.head[0] & 0x0f;
                let fin = self.head[0] & 0x80 != 0;
                self.payload_left = match self.head[1] & 0x7f {
                    126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
                    127 => {
                        let mut len = [0u8; 8];
                        len.copy_from_slice(&self.head[2..10]);
                        u64::from_be_bytes(len)
                    }
                    n => u64::from(n),
                };
                match opcode {
                    // Continuation: ends the message if final.
                    0x0 if self.mid_message => self.mid_message = !fin,
                    0x1 | 0x2 if !self.mid_message => self.mid_message = !fin,
                    // Control frames may come between fragments and change nothing.
                    0x8..=0xa if fin => {}
                    _ => self.lost = true,
                }
            }
        }
        self.have = 0;
    }
}

impl Observe for FrameCursor {
    fn observe(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.lost {
            if self.payload_left > 0 {
                let n = data
                    .len()
                    .min(usize::try_from(self.payload_left).unwrap_or(usize::MAX));
                self.payload_left -= n as u64;
                data = &data[n..];
                continue;
            }
            self.head[self.have] = data[0];
            self.have += 1;
            data = &data[1..];
            if self.header_len() == Some(self.have) {
                self.header_done();
            }
        }
    }
}

/// kubectl's side of a SPDY session: which streams it opened and which is the error
/// stream (from the `streamType` header of its SYN_STREAMs). Only control frames are
/// decoded; DATA payloads are skipped unread. A no-op for WebSocket.
#[derive(Debug)]
pub(crate) struct ClientFrames {
    /// `None` for WebSocket (nothing to follow; no inflate context allocated).
    decoder: Option<Decoder>,
    head: [u8; 8],
    have: usize,
    payload_left: usize,
    control: Option<Vec<u8>>,
    streams: Vec<u32>,
    error_stream: Option<u32>,
    lost: bool,
}

impl ClientFrames {
    fn new(spdy: bool) -> Self {
        Self {
            decoder: spdy.then(Decoder::new),
            head: [0; 8],
            have: 0,
            payload_left: 0,
            control: None,
            streams: Vec::new(),
            error_stream: None,
            lost: false,
        }
    }

    fn control_done(&mut self) {
        let (Some(frame), Some(decoder)) = (self.control.take(), self.decoder.as_mut()) else {
            return;
        };
        // Every control frame goes through the decoder, in order, so its inflate context
        // stays in step with kubectl's deflate context.
        decoder.feed(&frame);
        match decoder.next_frame() {
            Ok(Some(Frame::SynStream {
                stream_id, headers, ..
            })) => {
                self.streams.push(stream_id);
                let error = headers
                    .get("streamtype")
                    .is_some_and(|t| t.eq_ignore_ascii_case("error"));
                if error && self.error_stream.is_none() {
                    self.error_stream = Some(stream_id);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => self.lost = true,
        }
    }
}

impl Observe for ClientFrames {
    fn observe(&mut self, mut data: &[u8]) {
        if self.decoder.is_none() {
            return;
        }
        while !data.is_empty() && !self.lost {
            if self.payload_left > 0 {
                let n = data.len().min(self.payload_left);
                if let Some(control) = &mut self.control {
                    control.extend_from_slice(&data[..n]);
                }
                self.payload_left -= n;
                data = &data[n..];
                if self.payload_left == 0 {
                    self.control_done();
                }
                continue;
            }
            self.head[self.have] = data[0];
            self.have += 1;
            data = &data[1..];
            if self.have < self.head.len() {
                continue;
            }
            self.have = 0;
            let len = u32::from_be_bytes([0, self.head[5], self.head[6], self.head[7]]) as usize;
            if self.head[0] & 0x80 != 0 {
                if len > MAX_CONTROL_FRAME {
                    self.lost = true;
                    return;
                }
                let mut control = Vec::with_capacity(8 + len);
                control.extend_from_slice(&self.head);
                self.control = Some(control);
            }
            self.payload_left = len;
            if len == 0 {
                self.control_done();
            }
        }
    }
}

impl<T: Observe> Observe for Option<&mut T> {
    fn observe(&mut self, data: &[u8]) {
        if let Some(inner) = self {
            inner.observe(data);
        }
    }
}

#[cfg(test)]
mod tests;
