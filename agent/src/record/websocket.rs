//! Incremental WebSocket (RFC 6455) frame parser for one direction of a Kubernetes stream
//! session: fed relay chunks split anywhere, it yields message payloads by channel.
//!
//! Data payloads are unmasked and handed on as they arrive, never buffered, so memory is
//! bounded by a 125-byte control frame and a 3-character base64 carry per direction.

use super::TapError;
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Largest frame length accepted (nothing is buffered, but a larger declared length is
/// not a Kubernetes peer: client-go and the API server write frames of at most 32 KiB).
pub const MAX_FRAME: u64 = 16 << 20;

/// Base64 that accepts a final group with or without padding.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// How the messages of a subprotocol carry their channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `*.channel.k8s.io` / `portforward.k8s.io`: binary, first byte is the channel.
    Channel,
    /// `*.base64.channel.k8s.io`: text, first character `'0'+channel`, then base64.
    Base64,
    /// `SPDY/3.1+portforward.k8s.io`: binary messages carry a raw byte stream.
    Raw,
}

/// What the parser found, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Payload bytes of a data message on `channel` (0 for [`Dialect::Raw`]), decoded and
    /// without the channel byte. A message may arrive as several pieces.
    Data {
        /// The message's channel.
        channel: u8,
        /// Decoded bytes.
        data: &'a [u8],
    },
    /// A close frame (`code` if it carried one).
    Close {
        /// Status code.
        code: Option<u16>,
    },
}

/// The data message being read.
#[derive(Debug)]
struct Message {
    /// `None` until the channel byte/character has been read.
    channel: Option<u8>,
    /// base64 characters not yet forming a group of four.
    carry: Vec<u8>,
}

/// One direction's parser.
#[derive(Debug)]
pub struct Parser {
    dialect: Dialect,
    /// Client-to-server frames must be masked, server-to-client ones must not.
    from_client: bool,
    head: [u8; 14],
    have: usize,
    /// Current frame (after its header).
    opcode: u8,
    fin: bool,
    mask: Option<[u8; 4]>,
    left: u64,
    offset: u64,
    in_frame: bool,
    message: Option<Message>,
    control: Vec<u8>,
    closed: bool,
    failed: bool,
    scratch: Vec<u8>,
}

fn err(what: impl Into<String>) -> TapError {
    TapError(format!("websocket: {}", what.into()))
}

impl Parser {
    /// A parser for frames sent by the client (`from_client`) or by the server.
    pub fn new(dialect: Dialect, from_client: bool) -> Self {
        Self {
            dialect,
            from_client,
            head: [0; 14],
            have: 0,
            opcode: 0,
            fin: false,
            mask: None,
            left: 0,
            offset: 0,
            in_frame: false,
            message: None,
            control: Vec::new(),
            closed: false,
            failed: false,
            scratch: Vec::new(),
        }
    }

    /// Whether the stream ended exactly between frames (not inside one).
    pub fn at_boundary(&self) -> bool {
        !self.in_frame && self.have == 0
    }

    /// Parses `data`, calling `out` with every piece. After an error the parser stays
    /// failed: the framing can no longer be trusted.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        out: &mut dyn FnMut(Piece<'_>) -> Result<(), TapError>,
    ) -> Result<(), TapError> {
        if self.failed {
            return Err(err("stream already failed"));
        }
        let result = (|| {
            while !data.is_empty() {
                if self.in_frame {
                    let n = data
                        .len()
                        .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                    let (now, rest) = data.split_at(n);
                    data = rest;
                    self.payload(now, out)?;
                    if self.left == 0 {
                        self.frame_done(out)?;
                    }
                    continue;
                }
                if self.closed {
                    return Err(err("bytes after the close frame"));
                }
                self.head[self.have] = data[0];
                self.have += 1;
                data = &data[1..];
                if self.header_len() == Some(self.have) {
                    self.header_done()?;
                    if self.left == 0 {
                        self.frame_done(out)?;
                    }
                }
            }
            Ok(())
        })();
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn header_len(&self) -> Option<usize> {
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

    fn header_done(&mut self) -> Result<(), TapError> {
        let (b0, b1) = (self.head[0], self.head[1]);
        self.have = 0;
        if b0 & 0x70 != 0 {
            return Err(err("reserved bits set (no extension was negotiated)"));
        }
        self.fin = b0 & 0x80 != 0;
        self.opcode = b0 & 0x0f;
        let masked = b1 & 0x80 != 0;
        if masked != self.from_client {
            return Err(err(if self.from_client {
                "client frame without a masking key"
            } else {
                "server frame with a masking key"
            }));
        }
        let (len, key_at) = match b1 & 0x7f {
            126 => (
                u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
                4,
            ),
            127 => {
                let mut l = [0u8; 8];
                l.copy_from_slice(&self.head[2..10]);
                (u64::from_be_bytes(l), 10)
            }
            n => (u64::from(n), 2),
        };
        self.mask = masked.then(|| {
            [
                self.head[key_at],
                self.head[key_at + 1],
                self.head[key_at + 2],
                self.head[key_at + 3],
            ]
        });
        match self.opcode {
            0x0 if self.message.is_none() => return Err(err("continuation outside a message")),
            0x1 | 0x2 if self.message.is_some() => {
                return Err(err("new message inside a fragmented one"));
            }
            0x0 => {}
            0x1 | 0x2 => {
                let want_text = self.dialect == Dialect::Base64;
                if (self.opcode == 0x1) != want_text {
                    return Err(err(if want_text {
                        "binary message in a base64 (text) session"
                    } else {
                        "text message in a binary session"
                    }));
                }
                self.message = Some(Message {
                    channel: (self.dialect == Dialect::Raw).then_some(0),
                    carry: Vec::new(),
                });
            }
            0x8..=0xa => {
                if !self.fin || len > 125 {
                    return Err(err("fragmented or oversized control frame"));
                }
                self.control.clear();
            }
            op => return Err(err(format!("reserved opcode {op:#x}"))),
        }
        if len > MAX_FRAME {
            return Err(err(format!(
                "frame of {len} bytes exceeds the limit of {MAX_FRAME}"
            )));
        }
        self.left = len;
        self.offset = 0;
        self.in_frame = true;
        Ok(())
    }

    fn payload(
        &mut self,
        raw: &[u8],
        out: &mut dyn FnMut(Piece<'_>) -> Result<(), TapError>,
    ) -> Result<(), TapError> {
        self.scratch.clear();
        self.scratch.extend_from_slice(raw);
        if let Some(key) = self.mask {
            for (i, b) in self.scratch.iter_mut().enumerate() {
                *b ^= key[((self.offset + i as u64) % 4) as usize];
            }
        }
        self.offset += raw.len() as u64;
        self.left -= raw.len() as u64;
        if self.opcode >= 0x8 {
            self.control.extend_from_slice(&self.scratch);
            return Ok(());
        }
        let Some(message) = self.message.as_mut() else {
            return Err(err("payload outside a message"));
        };
        let mut bytes: &[u8] = &self.scratch;
        if message.channel.is_none() {
            let Some((&first, rest)) = bytes.split_first() else {
                return Ok(());
            };
            message.channel = Some(match self.dialect {
                Dialect::Base64 => match first {
                    b'0'..=b'9' => first - b'0',
                    _ => return Err(err("base64 message without a channel digit")),
                },
                _ => first,
            });
            bytes = rest;
        }
        let channel = message.channel.unwrap_or(0);
        if self.dialect != Dialect::Base64 {
            return if bytes.is_empty() {
                Ok(())
            } else {
                out(Piece::Data {
                    channel,
                    data: bytes,
                })
            };
        }
        message.carry.extend_from_slice(bytes);
        let whole = message.carry.len() / 4 * 4;
        if whole == 0 {
            return Ok(());
        }
        let decoded = B64
            .decode(&message.carry[..whole])
            .map_err(|e| err(format!("bad base64: {e}")))?;
        message.carry.drain(..whole);
        out(Piece::Data {
            channel,
            data: &decoded,
        })
    }

    fn frame_done(
        &mut self,
        out: &mut dyn FnMut(Piece<'_>) -> Result<(), TapError>,
    ) -> Result<(), TapError> {
        self.in_frame = false;
        match self.opcode {
            0x8 => {
                let code = (self.control.len() >= 2)
                    .then(|| u16::from_be_bytes([self.control[0], self.control[1]]));
                if self.control.len() == 1 {
                    return Err(err("close frame with a one-byte payload"));
                }
                self.closed = true;
                out(Piece::Close { code })
            }
            0x9 | 0xa => Ok(()),
            _ if self.fin => {
                let Some(message) = self.message.take() else {
                    return Ok(());
                };
                if message.carry.is_empty() {
                    return Ok(());
                }
                let decoded = B64
                    .decode(&message.carry)
                    .map_err(|e| err(format!("bad base64: {e}")))?;
                out(Piece::Data {
                    channel: message.channel.unwrap_or(0),
                    data: &decoded,
                })
            }
            _ => Ok(()),
        }
    }
}

/// Appends one WebSocket frame (masked with `mask` if given): for tests, fuzzing and the
/// agent's own messages.
pub fn encode_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) {
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(m | n as u8),
        n @ 126..=0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (channel, bytes) per run of one channel, close codes, the error if any.
    type Parsed = (Vec<(u8, Vec<u8>)>, Vec<Option<u16>>, Option<TapError>);

    /// Feeds `wire` in pieces of `split` bytes.
    fn run(dialect: Dialect, from_client: bool, wire: &[u8], split: usize) -> Parsed {
        let mut p = Parser::new(dialect, from_client);
        let mut data: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut closes = Vec::new();
        for piece in wire.chunks(split.max(1)) {
            let r = p.feed(piece, &mut |piece| {
                match piece {
                    Piece::Data { channel, data: d } => match data.last_mut() {
                        Some((c, v)) if *c == channel => v.extend_from_slice(d),
                        _ => data.push((channel, d.to_vec())),
                    },
                    Piece::Close { code } => closes.push(code),
                }
                Ok(())
            });
            if let Err(e) = r {
                return (data, closes, Some(e));
            }
        }
        (data, closes, None)
    }

    #[test]
    fn masked_fragmented_messages_with_control_frames_in_between() {
        let key = Some([1, 2, 3, 4]);
        let mut wire = Vec::new();
        encode_frame(&mut wire, false, 2, key, b"\x00hel");
        encode_frame(&mut wire, true, 9, key, b"ping");
        encode_frame(&mut wire, true, 0, key, b"lo\n");
        encode_frame(&mut wire, true, 2, key, &[4]);
        encode_frame(&mut wire, true, 2, key, &[255, 0]);
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"bye");
        encode_frame(&mut wire, true, 8, key, &close);
        for split in [1, 2, 3, 7, 1000] {
            let (data, closes, e) = run(Dialect::Channel, true, &wire, split);
            assert_eq!(e, None);
            assert_eq!(
                data,
                vec![(0, b"hello\n".to_vec()), (255, vec![0])],
                "split {split}"
            );
            assert_eq!(closes, vec![Some(1000)]);
        }
    }

    #[test]
    fn long_lengths_and_base64_text() {
        let big = vec![7u8; 70_000];
        let mut msg = vec![1u8];
        msg.extend_from_slice(&big);
        let mut wire = Vec::new();
        encode_frame(&mut wire, true, 2, None, &msg);
        let (data, _, e) = run(Dialect::Channel, false, &wire, 4096);
        assert_eq!(e, None);
        assert_eq!(data, vec![(1, big)]);

        let mut wire = Vec::new();
        let text = format!("1{}", B64.encode(b"hello world"));
        encode_frame(&mut wire, false, 1, None, &text.as_bytes()[..6]);
        encode_frame(&mut wire, true, 0, None, &text.as_bytes()[6..]);
        for split in [1, 5, 100] {
            let (data, _, e) = run(Dialect::Base64, false, &wire, split);
            assert_eq!(e, None);
            assert_eq!(data, vec![(1, b"hello world".to_vec())]);
        }
    }

    #[test]
    fn malformed_frames_are_errors() {
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            ("unmasked client frame", vec![0x82, 1, 0], true),
            (
                "masked server frame",
                vec![0x82, 0x81, 0, 0, 0, 0, 0],
                false,
            ),
            ("reserved bits", vec![0xc2, 0], false),
            ("reserved opcode", vec![0x83, 0], false),
            ("continuation first", vec![0x80, 0], false),
            ("fragmented ping", vec![0x09, 0], false),
            ("long ping", vec![0x89, 126, 0, 200], false),
            ("huge frame", vec![0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0], false),
            ("text in binary session", vec![0x81, 1, b'a'], false),
            ("data after close", vec![0x88, 0, 0x82, 1, 1], false),
            (
                "new message mid message",
                vec![0x02, 1, 1, 0x82, 1, 1],
                false,
            ),
        ];
        for (name, wire, from_client) in cases {
            let (_, _, e) = run(Dialect::Channel, from_client, &wire, 1);
            assert!(e.is_some(), "{name} accepted");
        }
        let (_, _, e) = run(Dialect::Base64, false, b"\x81\x03\x31!!", 1);
        assert!(e.is_some(), "bad base64 accepted");
    }
}
