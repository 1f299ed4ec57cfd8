//! Incremental SPDY/3.1 decoder and encoder over byte buffers (sans-IO): feed bytes as
//! they arrive, split anywhere, and take whole frames out.

use super::error::{Result, SpdyError};
use super::frame::{Frame, Headers, Setting, frame_type as ft};
use super::zlib::{HeaderCompressor, HeaderDecompressor};
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The SPDY version this codec speaks.
pub const SPDY_VERSION: u16 = 3;
/// Largest length the 24-bit length field can carry.
pub const MAX_FRAME_LEN: usize = (1 << 24) - 1;
const HEADER_LEN: usize = 8;
const STREAM_ID_MASK: u32 = 0x7fff_ffff;

/// Limits that keep a hostile peer from making the decoder allocate without bound.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted frame payload (DATA or control), in bytes.
    pub max_frame_len: usize,
    /// Largest accepted header block after inflation, in bytes.
    pub max_header_block: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // spdystream writes DATA in chunks of at most 32 KiB; 1 MiB leaves room.
            max_frame_len: 1 << 20,
            max_header_block: 64 << 10,
        }
    }
}

/// Decodes one direction of a SPDY/3.1 connection.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
    inflate: HeaderDecompressor,
    limits: Limits,
    failed: bool,
}

impl Decoder {
    /// A decoder with default [`Limits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder with custom limits.
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed. After an error the
    /// decoder stays failed (the inflate context can no longer be trusted).
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.failed {
            return Err(SpdyError::Malformed {
                frame: "connection",
                reason: "decoder already failed",
            });
        }
        let result = self.try_next();
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn try_next(&mut self) -> Result<Option<Frame>> {
        let Some(head) = self.buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let head = *head;
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len > self.limits.max_frame_len {
            return Err(SpdyError::FrameTooLarge {
                len,
                limit: self.limits.max_frame_len,
            });
        }
        // Check the version before waiting for the payload, so garbage fails fast.
        let control = head[0] & 0x80 != 0;
        if control {
            let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
            if version != SPDY_VERSION {
                return Err(SpdyError::UnsupportedVersion(version));
            }
        }
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let payload = self.buf.split_to(len).freeze();
        let flags = head[4];
        if !control {
            let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            return Ok(Some(Frame::Data {
                stream_id,
                flags,
                data: payload,
            }));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        self.control(kind, flags, payload).map(Some)
    }

    fn control(&mut self, kind: u16, flags: u8, mut p: Bytes) -> Result<Frame> {
        let limit = self.limits.max_header_block;
        Ok(match kind {
            ft::SYN_STREAM => {
                need(&p, 10, "SYN_STREAM")?;
                let stream_id = p.get_u32() & STREAM_ID_MASK;
                let associated_id = p.get_u32() & STREAM_ID_MASK;
                let priority = p.get_u8() >> 5;
                let slot = p.get_u8();
                let headers = self.inflate.decompress(&p, limit)?;
                Frame::SynStream {
                    stream_id,
                    associated_id,
                    priority,
                    slot,
                    flags,
                    headers,
                }
            }
            ft::SYN_REPLY => {
                need(&p, 4, "SYN_REPLY")?;
                let stream_id = p.get_u32() & STREAM_ID_MASK;
                let headers = self.inflate.decompress(&p, limit)?;
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers,
                }
            }
            ft::HEADERS => {
                need(&p, 4, "HEADERS")?;
                let stream_id = p.get_u32() & STREAM_ID_MASK;
                let headers = self.inflate.decompress(&p, limit)?;
                Frame::Headers {
                    stream_id,
                    flags,
                    headers,
                }
            }
            ft::RST_STREAM => {
                exact(&p, 8, "RST_STREAM")?;
                Frame::RstStream {
                    stream_id: p.get_u32() & STREAM_ID_MASK,
                    status: p.get_u32(),
                }
            }
            ft::SETTINGS => {
                need(&p, 4, "SETTINGS")?;
                let count = p.get_u32() as usize;
                if count.checked_mul(8) != Some(p.len()) {
                    return Err(SpdyError::Malformed {
                        frame: "SETTINGS",
                        reason: "entry count does not match length",
                    });
                }
                let entries = (0..count)
                    .map(|_| {
                        let word = p.get_u32();
                        Setting {
                            flags: (word >> 24) as u8,
                            id: word & 0x00ff_ffff,
                            value: p.get_u32(),
                        }
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            ft::PING => {
                exact(&p, 4, "PING")?;
                Frame::Ping { id: p.get_u32() }
            }
            ft::GOAWAY => {
                // SPDY/3 GOAWAY carries a status; SPDY/2's did not, so accept 4 bytes too.
                if p.len() != 8 && p.len() != 4 {
                    return Err(SpdyError::Malformed {
                        frame: "GOAWAY",
                        reason: "length must be 8",
                    });
                }
                let last_good_stream_id = p.get_u32() & STREAM_ID_MASK;
                let status = if p.has_remaining() { p.get_u32() } else { 0 };
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                }
            }
            ft::WINDOW_UPDATE => {
                exact(&p, 8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate {
                    stream_id: p.get_u32() & STREAM_ID_MASK,
                    delta: p.get_u32() & STREAM_ID_MASK,
                }
            }
            other => Frame::Unknown {
                frame_type: other,
                flags,
                payload: p,
            },
        })
    }
}

fn need(p: &Bytes, n: usize, frame: &'static str) -> Result<()> {
    if p.len() < n {
        return Err(SpdyError::Malformed {
            frame,
            reason: "payload too short",
        });
    }
    Ok(())
}

fn exact(p: &Bytes, n: usize, frame: &'static str) -> Result<()> {
    if p.len() != n {
        return Err(SpdyError::Malformed {
            frame,
            reason: "wrong payload length",
        });
    }
    Ok(())
}

/// Encodes one direction of a SPDY/3.1 connection (owns that direction's deflate context,
/// so every frame with a header block must go through the same encoder, in wire order).
#[derive(Debug, Default)]
pub struct Encoder {
    deflate: HeaderCompressor,
}

impl Encoder {
    /// A fresh encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the wire form of `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<()> {
        match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let len = frame_len(data.len())?;
                out.put_u32(stream_id_field(*stream_id)?);
                out.put_u8(*flags);
                put_u24(out, len);
                out.extend_from_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_id,
                priority,
                slot,
                flags,
                headers,
            } => {
                let block = self.deflate.compress(headers)?;
                let mut p = BytesMut::with_capacity(10 + block.len());
                p.put_u32(stream_id_field(*stream_id)?);
                p.put_u32(stream_id_field(*associated_id)?);
                p.put_u8((priority & 0x7) << 5);
                p.put_u8(*slot);
                p.extend_from_slice(&block);
                control(out, ft::SYN_STREAM, *flags, &p)?;
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => self.with_block(out, ft::SYN_REPLY, *stream_id, *flags, headers)?,
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => self.with_block(out, ft::HEADERS, *stream_id, *flags, headers)?,
            Frame::RstStream { stream_id, status } => {
                let mut p = BytesMut::with_capacity(8);
                p.put_u32(stream_id_field(*stream_id)?);
                p.put_u32(*status);
                control(out, ft::RST_STREAM, 0, &p)?;
            }
            Frame::Settings { flags, entries } => {
                let mut p = BytesMut::with_capacity(4 + entries.len() * 8);
                p.put_u32(
                    u32::try_from(entries.len())
                        .map_err(|_| SpdyError::Unencodable("settings count"))?,
                );
                for e in entries {
                    if e.id > 0x00ff_ffff {
                        return Err(SpdyError::Unencodable("setting id above 24 bits"));
                    }
                    p.put_u32((u32::from(e.flags) << 24) | e.id);
                    p.put_u32(e.value);
                }
                control(out, ft::SETTINGS, *flags, &p)?;
            }
            Frame::Ping { id } => control(out, ft::PING, 0, &id.to_be_bytes())?,
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                let mut p = BytesMut::with_capacity(8);
                p.put_u32(stream_id_field(*last_good_stream_id)?);
                p.put_u32(*status);
                control(out, ft::GOAWAY, 0, &p)?;
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut p = BytesMut::with_capacity(8);
                p.put_u32(stream_id_field(*stream_id)?);
                p.put_u32(stream_id_field(*delta)?);
                control(out, ft::WINDOW_UPDATE, 0, &p)?;
            }
            Frame::Unknown {
                frame_type,
                flags,
                payload,
            } => control(out, *frame_type, *flags, payload)?,
        }
        Ok(())
    }

    /// Convenience: encodes one frame into a fresh buffer.
    pub fn encode_to_bytes(&mut self, frame: &Frame) -> Result<Bytes> {
        let mut out = BytesMut::new();
        self.encode(frame, &mut out)?;
        Ok(out.freeze())
    }

    fn with_block(
        &mut self,
        out: &mut BytesMut,
        kind: u16,
        stream_id: u32,
        flags: u8,
        headers: &Headers,
    ) -> Result<()> {
        let block = self.deflate.compress(headers)?;
        let mut p = BytesMut::with_capacity(4 + block.len());
        p.put_u32(stream_id_field(stream_id)?);
        p.extend_from_slice(&block);
        control(out, kind, flags, &p)
    }
}

fn control(out: &mut BytesMut, kind: u16, flags: u8, payload: &[u8]) -> Result<()> {
    let len = frame_len(payload.len())?;
    out.put_u16(0x8000 | SPDY_VERSION);
    out.put_u16(kind);
    out.put_u8(flags);
    put_u24(out, len);
    out.extend_from_slice(payload);
    Ok(())
}

fn frame_len(len: usize) -> Result<u32> {
    if len > MAX_FRAME_LEN {
        return Err(SpdyError::Unencodable("payload above 2^24-1 bytes"));
    }
    Ok(len as u32)
}

fn stream_id_field(id: u32) -> Result<u32> {
    if id > STREAM_ID_MASK {
        return Err(SpdyError::Unencodable("id above 2^31-1"));
    }
    Ok(id)
}

fn put_u24(out: &mut BytesMut, v: u32) {
    out.extend_from_slice(&v.to_be_bytes()[1..]);
}

#[cfg(test)]
mod tests;
