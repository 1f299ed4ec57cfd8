//! The one place recorded bytes pass through before they are written into a recording:
//! a per-stream redaction step, the masking engine's streaming text masker. Recordings are
//! always masked, whatever the user's own view shows.

use gatehouse_common::mask::text::{TextDetectors, TextMasker};
use std::sync::Arc;

/// Rewrites one stream's bytes (stdout, stderr or stdin) before they are recorded. Fed in
/// order, split anywhere; may hold bytes back (a secret split across frames) until more
/// arrive or [`Redact::finish`].
pub trait Redact: Send {
    /// Takes `input`, appends what may be recorded now to `out`.
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>);
    /// The stream ended: appends whatever was held back.
    fn finish(&mut self, out: &mut Vec<u8>);
}

impl Redact for TextMasker {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        TextMasker::push(self, input, out);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        TextMasker::finish(self, out);
    }
}

/// The redaction step for one recorded stream: `detectors` (the request's masking profile's
/// text detectors, else the built-in ones).
pub fn for_stream(detectors: &Arc<TextDetectors>) -> Box<dyn Redact> {
    Box::new(TextMasker::new(detectors.clone()))
}
