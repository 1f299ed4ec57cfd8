//! Header-block compression: one zlib context per direction for the whole connection,
//! primed with the SPDY/3 dictionary, sync-flushed after every block (SPDY/3 §2.6.10).

use super::dictionary::SPDY3_DICTIONARY;
use super::error::{Result, SpdyError};
use super::frame::Headers;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Serializes `headers` into an uncompressed name/value block (u32 lengths, big-endian).
pub fn encode_block(headers: &Headers) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(4 + headers.len() * 32);
    put_len(&mut out, headers.len())?;
    for (name, value) in &headers.0 {
        // spdystream lower-cases names on write; peers compare case-insensitively anyway.
        let name = name.to_ascii_lowercase();
        put_len(&mut out, name.len())?;
        out.extend_from_slice(name.as_bytes());
        put_len(&mut out, value.len())?;
        out.extend_from_slice(value.as_bytes());
    }
    Ok(out)
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Result<()> {
    let len = u32::try_from(len).map_err(|_| SpdyError::Unencodable("header block field"))?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Parses an uncompressed name/value block.
pub fn decode_block(mut block: &[u8]) -> Result<Headers> {
    let count = take_u32(&mut block)? as usize;
    // Each pair needs at least 8 bytes: reject absurd counts before allocating.
    if count > block.len() / 8 {
        return Err(SpdyError::MalformedHeaderBlock("pair count exceeds block"));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name = take_str(&mut block)?;
        let value = take_str(&mut block)?;
        headers.push((name, value));
    }
    if !block.is_empty() {
        return Err(SpdyError::MalformedHeaderBlock("trailing bytes"));
    }
    Ok(Headers(headers))
}

fn take_u32(block: &mut &[u8]) -> Result<u32> {
    let (head, rest) = block
        .split_first_chunk::<4>()
        .ok_or(SpdyError::MalformedHeaderBlock("truncated length"))?;
    *block = rest;
    Ok(u32::from_be_bytes(*head))
}

fn take_str(block: &mut &[u8]) -> Result<String> {
    let len = take_u32(block)? as usize;
    if len > block.len() {
        return Err(SpdyError::MalformedHeaderBlock("truncated string"));
    }
    let (s, rest) = block.split_at(len);
    *block = rest;
    String::from_utf8(s.to_vec()).map_err(|_| SpdyError::MalformedHeaderBlock("non-utf-8 string"))
}

/// The sending direction's deflate context.
pub struct HeaderCompressor {
    z: Compress,
    primed: bool,
}

impl std::fmt::Debug for HeaderCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderCompressor").finish_non_exhaustive()
    }
}

impl Default for HeaderCompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderCompressor {
    /// A fresh context (spdystream uses BestCompression; any level interoperates).
    pub fn new() -> Self {
        Self {
            z: Compress::new(Compression::best(), true),
            primed: false,
        }
    }

    /// Compresses one header block and sync-flushes it, so the peer can inflate it alone.
    pub fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>> {
        if !self.primed {
            self.z
                .set_dictionary(SPDY3_DICTIONARY)
                .map_err(SpdyError::Compress)?;
            self.primed = true;
        }
        let raw = encode_block(headers)?;
        let mut out = Vec::with_capacity(raw.len() / 2 + 64);
        let mut input = &raw[..];
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before = self.z.total_in();
            self.z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(SpdyError::Compress)?;
            let used = (self.z.total_in() - before) as usize;
            input = &input[used..];
            // Done when all input is in and the flush left spare room (nothing pending).
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// The receiving direction's inflate context.
pub struct HeaderDecompressor {
    z: Decompress,
}

impl std::fmt::Debug for HeaderDecompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDecompressor").finish_non_exhaustive()
    }
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDecompressor {
    /// A fresh context; the dictionary is supplied when zlib asks for it (Z_NEED_DICT).
    pub fn new() -> Self {
        Self {
            z: Decompress::new(true),
        }
    }

    /// Inflates one compressed header block and parses it. Fails when the inflated block
    /// would exceed `limit` bytes (the output is never grown past `limit + 1`).
    pub fn decompress(&mut self, block: &[u8], limit: usize) -> Result<Headers> {
        let raw = self.inflate(block, limit)?;
        decode_block(&raw)
    }

    fn inflate(&mut self, block: &[u8], limit: usize) -> Result<Vec<u8>> {
        let cap = limit.saturating_add(1);
        let mut out: Vec<u8> = Vec::with_capacity(cap.min(4096));
        let mut input = block;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= cap {
                    return Err(SpdyError::HeaderBlockTooLarge { limit });
                }
                let grow = out.capacity().max(1024).min(cap - out.len());
                out.reserve_exact(grow);
            }
            let (in_before, out_before) = (self.z.total_in(), out.len());
            let result = self
                .z
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.z.total_in() - in_before) as usize;
            input = &input[used.min(input.len())..];
            match result {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    let progressed = used > 0 || out.len() > out_before;
                    // All input consumed and room left: zlib has nothing more to give.
                    if input.is_empty() && out.len() < out.capacity() {
                        break;
                    }
                    if !progressed && out.len() < out.capacity() {
                        return Err(SpdyError::MalformedHeaderBlock("incomplete zlib data"));
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(SPDY3_DICTIONARY)
                        .map_err(SpdyError::Decompress)?;
                }
                Err(e) => return Err(SpdyError::Decompress(e)),
            }
        }
        if out.len() > limit {
            return Err(SpdyError::HeaderBlockTooLarge { limit });
        }
        Ok(out)
    }
}
