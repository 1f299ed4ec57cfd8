//! A stream of JSON documents — one response body, or a watch's newline-delimited events
//! — masked document by document as chunks arrive, with chunk boundaries anywhere.

use super::json::mask_document;
use super::profile::Profile;
use super::{MaskError, Result};
use serde_json::Value;
use std::sync::Arc;

/// Masks a stream of JSON documents. Holds at most one incomplete document (bounded by
/// `limit`); each complete one is masked and written out compact, newline-terminated.
pub struct JsonStreamMasker {
    profile: Arc<Profile>,
    buf: Vec<u8>,
    limit: usize,
    /// Bytes consumed before `buf`, for error offsets.
    consumed: usize,
}

impl std::fmt::Debug for JsonStreamMasker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonStreamMasker")
            .field("profile", &self.profile.name)
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl JsonStreamMasker {
    /// A masker applying `profile`, refusing documents longer than `limit` bytes.
    pub fn new(profile: Arc<Profile>, limit: usize) -> Self {
        Self {
            profile,
            buf: Vec::new(),
            limit,
            consumed: 0,
        }
    }

    /// Takes a chunk; writes every document it completes to `out`, masked.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        // The API server ends every document (and every watch event) with a newline, so
        // only a chunk with one can complete a document: no re-parsing per chunk.
        let completes = input.contains(&b'\n');
        if self.buf.is_empty() && completes {
            // Parse straight from the input; keep only an incomplete tail.
            let used = drain(&self.profile, self.consumed, input, out)?;
            self.consumed += used;
            self.buf.extend_from_slice(&input[used..]);
        } else {
            self.buf.extend_from_slice(input);
            if completes {
                self.drain_buf(out)?;
            }
        }
        if self.buf.len() > self.limit {
            return Err(MaskError::TooLarge(self.limit));
        }
        Ok(())
    }

    /// Ends the stream: the rest must be complete documents (or whitespace).
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        self.drain_buf(out)?;
        if self.buf.iter().any(|b| !b.is_ascii_whitespace()) {
            return Err(MaskError::Truncated);
        }
        self.buf.clear();
        Ok(())
    }

    fn drain_buf(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let used = drain(&self.profile, self.consumed, &self.buf, out)?;
        self.buf.drain(..used);
        self.consumed += used;
        Ok(())
    }
}

/// Masks every complete document at the start of `data` into `out`; returns the bytes
/// used (`consumed` is the stream offset of `data`, for error messages).
fn drain(profile: &Profile, consumed: usize, data: &[u8], out: &mut Vec<u8>) -> Result<usize> {
    let mut docs = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    let mut used = 0;
    loop {
        match docs.next() {
            Some(Ok(mut doc)) => {
                used = docs.byte_offset();
                mask_document(profile, &mut doc);
                serde_json::to_writer(&mut *out, &doc).map_err(|e| MaskError::Json {
                    offset: consumed + used,
                    reason: e.to_string(),
                })?;
                out.push(b'\n');
            }
            Some(Err(e)) if e.is_eof() => return Ok(used),
            Some(Err(e)) => {
                // The parser's message carries a position, never the content.
                return Err(MaskError::Json {
                    offset: consumed + docs.byte_offset(),
                    reason: e.to_string(),
                });
            }
            None => return Ok(data.len()),
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use super::*;
    use crate::mask::MARKER_BASE64;

    fn masker(limit: usize) -> JsonStreamMasker {
        JsonStreamMasker::new(Arc::new(Profile::builtin_default().unwrap()), limit)
    }

    fn event(kind: &str, value: &str) -> String {
        format!(
            "{{\"type\":\"{kind}\",\"object\":{{\"kind\":\"Secret\",\"metadata\":{{\"name\":\"s\"}},\"data\":{{\"k\":\"{value}\"}}}}}}\n"
        )
    }

    #[test]
    fn watch_events_split_anywhere_are_masked_one_by_one() {
        let stream = format!(
            "{}{}",
            event("ADDED", "c2VjcmV0MQ=="),
            event("MODIFIED", "c2VjcmV0Mg==")
        );
        for cut in 0..=stream.len() {
            let mut m = masker(1 << 20);
            let mut out = Vec::new();
            m.push(&stream.as_bytes()[..cut], &mut out).unwrap();
            let first = out.len();
            m.push(&stream.as_bytes()[cut..], &mut out).unwrap();
            m.finish(&mut out).unwrap();
            let s = String::from_utf8(out.clone()).unwrap();
            assert!(!s.contains("c2VjcmV0"), "{s}");
            assert_eq!(s.matches(MARKER_BASE64).count(), 2, "{s}");
            assert_eq!(s.lines().count(), 2);
            // The first event goes out as soon as its newline arrives.
            if cut > stream.find('\n').unwrap() {
                assert!(first > 0, "cut {cut}");
            }
        }
    }

    #[test]
    fn pretty_printed_single_documents_work() {
        let doc = "{\n  \"kind\": \"Secret\",\n  \"data\": {\n    \"k\": \"c2VjcmV0\"\n  }\n}\n";
        let mut m = masker(1 << 20);
        let mut out = Vec::new();
        for b in doc.as_bytes().chunks(3) {
            m.push(b, &mut out).unwrap();
        }
        m.finish(&mut out).unwrap();
        assert!(!String::from_utf8(out).unwrap().contains("c2VjcmV0"));
    }

    #[test]
    fn oversized_truncated_and_invalid_bodies_fail() {
        let mut m = masker(16);
        let mut out = Vec::new();
        assert!(matches!(
            m.push(b"{\"kind\":\"Secret\",\"data\":{", &mut out),
            Err(MaskError::TooLarge(16))
        ));
        let mut m = masker(1 << 20);
        m.push(b"{\"kind\":\"Secret\"", &mut out).unwrap();
        assert!(matches!(m.finish(&mut out), Err(MaskError::Truncated)));
        let mut m = masker(1 << 20);
        let err = m.push(b"{\"data\": nope}\n", &mut out).unwrap_err();
        assert!(matches!(err, MaskError::Json { .. }), "{err}");
        assert!(!err.to_string().contains("nope"), "{err}");
        assert!(out.is_empty());
    }
}
