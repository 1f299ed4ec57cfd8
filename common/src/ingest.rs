//! Agent → collector ingest wire format: length-delimited JSON frames on one HTTP/2 stream.
//!
//! The agent opens `POST /v1/ingest` (HTTP/2, `content-type: application/x-gatehouse-frames`)
//! and streams [`Batch`] frames in the request body; the collector streams one [`Ack`]
//! frame per batch in the response body, in order, sent only after the store committed the
//! batch's events. The agent deletes spooled events only once their batch is acked, so a
//! batch may be sent again after a reconnect; the collector keeps inserts idempotent by
//! `event_id` (never by `seq`, which restarts with the spool after a torn segment).
//!
//! A frame is a 4-byte big-endian payload length followed by that many bytes of JSON.
//! Frames are bounded by [`MAX_FRAME_BYTES`] so a broken peer cannot make the other side
//! allocate without limit.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::audit::AuditEvent;

/// Path of the streaming ingest endpoint at the collector.
pub const INGEST_PATH: &str = "/v1/ingest";

/// `content-type` of both directions of the ingest stream.
pub const FRAMES_CONTENT_TYPE: &str = "application/x-gatehouse-frames";

/// Largest JSON payload a frame may carry (batches are cut well below this).
pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// Bytes of the length prefix.
const LENGTH_PREFIX: usize = 4;

/// A batch of spooled events, sent by an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The sending agent (its node name); the collector checks it against the agent's
    /// authenticated identity.
    pub agent: String,
    /// Sequence number of this batch on this stream, strictly increasing from 1 per
    /// connection; the matching [`Ack`] carries it back.
    pub seq: u64,
    /// The events, in spool order.
    pub events: Vec<AuditEvent>,
    /// The agent has never sent any of these events before (not by this connection, an
    /// earlier one, or an earlier run of the agent): the collector may skip its lookup of
    /// already-stored `event_id`s. `false` (the default, and what older agents send) means
    /// "may be a re-send": the collector checks. Only the agent can know this, since only
    /// it knows what it sent; a re-send is never marked fresh.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fresh: bool,
}

/// The collector's answer to one [`Batch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// The batch's `seq`.
    pub seq: u64,
    /// `true` when every event of the batch is durably stored (new or already present).
    /// `false` means nothing may be deleted: the agent retries the batch later.
    pub committed: bool,
    /// Events that were new rows (the rest were already stored: a re-sent batch).
    #[serde(default)]
    pub inserted: u64,
    /// Why the batch was not committed (empty when it was).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// A frame that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The announced or encoded payload is over [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    /// The payload is not the JSON this side expects.
    #[error("frame payload is not valid JSON for this message: {0}")]
    Json(#[from] serde_json::Error),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({0} bytes left over)")]
    Truncated(usize),
}

/// Appends one frame holding `message` as JSON to `out`.
pub fn encode_frame<T: Serialize>(message: &T, out: &mut BytesMut) -> Result<(), FrameError> {
    let start = out.len();
    out.put_u32(0);
    let mut writer = out.writer();
    serde_json::to_writer(&mut writer, message)?;
    let out = writer.into_inner();
    let len = out.len() - start - LENGTH_PREFIX;
    if len > MAX_FRAME_BYTES {
        out.truncate(start);
        return Err(FrameError::TooLarge(len));
    }
    // Lossless: len ≤ MAX_FRAME_BYTES < u32::MAX.
    out[start..start + LENGTH_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// One frame as [`Bytes`] (for a body stream).
pub fn frame<T: Serialize>(message: &T) -> Result<Bytes, FrameError> {
    let mut out = BytesMut::new();
    encode_frame(message, &mut out)?;
    Ok(out.freeze())
}

/// Incremental decoder: feed body chunks with [`FrameDecoder::push`], take whole frames with
/// [`FrameDecoder::next_frame`], and call [`FrameDecoder::finish`] at the end of the stream.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    /// A decoder with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Buffers a chunk of the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole frame decoded as `T`, `Ok(None)` when more bytes are needed.
    /// A frame announced over the limit is an error at once, before its bytes arrive.
    pub fn next_frame<T: for<'de> Deserialize<'de>>(&mut self) -> Result<Option<T>, FrameError> {
        if self.buf.len() < LENGTH_PREFIX {
            return Ok(None);
        }
        let mut prefix = [0u8; LENGTH_PREFIX];
        prefix.copy_from_slice(&self.buf[..LENGTH_PREFIX]);
        let len = u32::from_be_bytes(prefix) as usize;
        if len > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < LENGTH_PREFIX + len {
            return Ok(None);
        }
        self.buf.advance(LENGTH_PREFIX);
        let payload = self.buf.split_to(len);
        Ok(Some(serde_json::from_slice(&payload)?))
    }

    /// Checks that the stream ended on a frame boundary.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated(self.buf.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(seq: u64) -> Ack {
        Ack {
            seq,
            committed: true,
            inserted: 3,
            error: String::new(),
        }
    }

    #[test]
    fn frames_round_trip_when_split_at_every_byte() -> Result<(), FrameError> {
        let mut wire = BytesMut::new();
        encode_frame(&ack(1), &mut wire)?;
        encode_frame(&ack(2), &mut wire)?;
        let mut decoder = FrameDecoder::new();
        let mut seen = Vec::new();
        for byte in wire.iter() {
            decoder.push(&[*byte]);
            while let Some(a) = decoder.next_frame::<Ack>()? {
                seen.push(a);
            }
        }
        decoder.finish()?;
        assert_eq!(seen, vec![ack(1), ack(2)]);
        Ok(())
    }

    #[test]
    fn oversized_announcement_is_refused_before_buffering() {
        let mut decoder = FrameDecoder::new();
        decoder.push(&(MAX_FRAME_BYTES as u32 + 1).to_be_bytes());
        assert!(matches!(
            decoder.next_frame::<Ack>(),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn garbage_payload_and_truncated_stream_are_errors() -> Result<(), FrameError> {
        let mut decoder = FrameDecoder::new();
        decoder.push(&3u32.to_be_bytes());
        decoder.push(b"{x}");
        assert!(matches!(
            decoder.next_frame::<Ack>(),
            Err(FrameError::Json(_))
        ));

        let mut wire = BytesMut::new();
        encode_frame(&ack(7), &mut wire)?;
        let mut decoder = FrameDecoder::new();
        decoder.push(&wire[..wire.len() - 1]);
        assert!(decoder.next_frame::<Ack>()?.is_none());
        assert!(matches!(decoder.finish(), Err(FrameError::Truncated(_))));
        Ok(())
    }

    #[test]
    fn ack_without_optional_fields_parses() -> Result<(), serde_json::Error> {
        let a: Ack = serde_json::from_str(r#"{"seq":4,"committed":false}"#)?;
        assert_eq!(a.seq, 4);
        assert!(!a.committed);
        assert_eq!(a.inserted, 0);
        Ok(())
    }
}
