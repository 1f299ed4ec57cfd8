//! Errors of the SPDY/3.1 codec.

/// Everything that can go wrong while decoding or encoding SPDY/3.1 frames.
///
/// After any decode error the connection's header-decompression context may be out of
/// step with the peer's, so a [`Decoder`](super::Decoder) that returned an error must
/// not be fed further: end the session.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    /// A control frame carried a version other than 3.
    #[error("unsupported spdy version {0}")]
    UnsupportedVersion(u16),
    /// A frame's payload is longer than the configured limit.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// Declared payload length.
        len: usize,
        /// Configured maximum.
        limit: usize,
    },
    /// A control frame's payload is shorter or longer than its type requires.
    #[error("malformed {frame} frame: {reason}")]
    Malformed {
        /// Frame type name.
        frame: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A header block inflates to more than the configured limit.
    #[error("header block exceeds the limit of {limit} bytes")]
    HeaderBlockTooLarge {
        /// Configured maximum (decompressed bytes).
        limit: usize,
    },
    /// The decompressed header block is not a valid name/value block.
    #[error("malformed header block: {0}")]
    MalformedHeaderBlock(&'static str),
    /// zlib rejected a header block.
    #[error("header block decompression failed")]
    Decompress(#[source] flate2::DecompressError),
    /// zlib failed to compress a header block.
    #[error("header block compression failed")]
    Compress(#[source] flate2::CompressError),
    /// A value does not fit its wire field (e.g. a stream ID above 2^31-1, a payload
    /// above 2^24-1 bytes).
    #[error("cannot encode: {0}")]
    Unencodable(&'static str),
}

/// Result shorthand for the codec.
pub type Result<T, E = SpdyError> = std::result::Result<T, E>;
