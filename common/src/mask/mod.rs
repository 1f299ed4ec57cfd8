//! Masking engine: profiles that say what is secret, JSON masking by object kind, and the
//! streaming text masker for logs and exec/attach output.
//!
//! # Layout
//! - [`profile`]: profile files (YAML/JSON via serde), the built-in `default` profile,
//!   compiled profiles looked up by name.
//! - [`path`]: the small JSON path syntax of kind rules.
//! - [`json`]: masking one decoded API object — single objects, `*List`, watch events,
//!   `Table`, `last-applied-configuration` — by the kind in the body, never the URL.
//! - [`stream`]: [`JsonStreamMasker`], a stream of JSON documents (a body or a watch)
//!   masked document by document as chunks arrive.
//! - [`text`]: [`TextMasker`], regex detectors over a byte stream, correct across chunk
//!   boundaries.
//!
//! # Markers
//! Masked values keep their key and their shape: a string becomes [`MARKER`], and
//! `Secret.data` values (base64 by the API's contract) become [`MARKER_BASE64`], the base64
//! of the marker. Clients decode `data` as base64 — kubectl refuses a Secret whose data is
//! not — so a plain marker would break `kubectl describe` and typed clients, while the
//! base64 one keeps them working and `-o jsonpath='{.data.x}' | base64 -d` shows the marker.

pub mod json;
pub mod path;
pub mod profile;
pub mod stream;
pub mod text;

pub use profile::{Profile, ProfileSet, ProfileSpec, ProfilesFile};
pub use stream::JsonStreamMasker;
pub use text::{TextDetectors, TextMasker};

/// What a masked value is replaced with.
pub const MARKER: &str = "***MASKED***";
/// [`MARKER`] in base64, for values that are base64 by contract (`Secret.data`).
pub const MARKER_BASE64: &str = "KioqTUFTS0VEKioq";

/// Errors of the masking engine.
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    /// A regular expression in a profile does not compile (or is unusable).
    #[error("invalid pattern {pattern:?}: {reason}")]
    Regex {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// A JSON path in a profile is malformed.
    #[error("invalid path {path:?}: {reason}")]
    Path {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A text detector name is not one of the built-in ones.
    #[error("unknown text detector {0:?} (built-in: {list})", list = text::BUILTIN_DETECTORS.join(", "))]
    UnknownDetector(String),
    /// Two profiles share a name.
    #[error("profile {0:?} is defined twice")]
    DuplicateProfile(String),
    /// A profile name that no profile has.
    #[error("no masking profile named {0:?}")]
    UnknownProfile(String),
    /// A document being masked grew past the limit (nothing of it is sent).
    #[error("response document larger than the masking limit of {0} bytes")]
    TooLarge(usize),
    /// The body is not the JSON it claims to be, so it cannot be masked (nor sent).
    #[error("response is not valid JSON at byte {offset}: {reason}")]
    Json {
        /// Byte offset in the stream.
        offset: usize,
        /// The parser's reason (positions only, never content).
        reason: String,
    },
    /// The stream ended in the middle of a document.
    #[error("response ended inside a JSON document")]
    Truncated,
}

/// Result shorthand of this module.
pub type Result<T, E = MaskError> = std::result::Result<T, E>;
