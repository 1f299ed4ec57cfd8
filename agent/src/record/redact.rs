//! The one place recorded bytes pass through before they are written into a recording:
//! a per-stream redaction step. The masking engine plugs in here; until then the step is
//! [`Unredacted`], which says what it does: nothing is masked.

/// Rewrites one stream's bytes (stdout, stderr or stdin) before they are recorded. Fed in
/// order, split anywhere; may hold bytes back (a secret split across frames) until more
/// arrive or [`Redact::finish`].
pub trait Redact: Send {
    /// Takes `input`, appends what may be recorded now to `out`.
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>);
    /// The stream ended: appends whatever was held back.
    fn finish(&mut self, out: &mut Vec<u8>);
}

/// Records bytes as they are: no masking is applied.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unredacted;

impl Redact for Unredacted {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(input);
    }

    fn finish(&mut self, _out: &mut Vec<u8>) {}
}

/// The redaction step for one recorded stream. (Wire the masking engine in here.)
pub fn for_stream() -> Box<dyn Redact> {
    Box::new(Unredacted)
}
