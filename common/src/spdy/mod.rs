//! Sans-IO SPDY/3.1 codec as Kubernetes speaks it (moby/spdystream): frame types, an
//! incremental [`Decoder`] and an [`Encoder`] with per-direction zlib header contexts.
//!
//! Used by the test emulator to serve exec/attach/port-forward, and meant for the agent's
//! session tap. Feed bytes in any split (e.g. tunnelled in WebSocket messages); every
//! malformed, truncated-forever or oversized input ends in a [`SpdyError`], never a panic.
//!
//! ```
//! use gatehouse_common::spdy::{Decoder, Encoder, Frame, Headers};
//! let mut enc = Encoder::new();
//! let wire = enc
//!     .encode_to_bytes(&Frame::SynReply { stream_id: 1, flags: 0, headers: Headers::new() })
//!     .unwrap();
//! let mut dec = Decoder::new();
//! dec.feed(&wire[..3]);
//! assert!(dec.next_frame().unwrap().is_none());
//! dec.feed(&wire[3..]);
//! assert!(matches!(dec.next_frame().unwrap(), Some(Frame::SynReply { stream_id: 1, .. })));
//! ```

mod codec;
mod dictionary;
mod error;
mod frame;
mod zlib;

pub use codec::{Decoder, Encoder, Limits, MAX_FRAME_LEN, SPDY_VERSION};
pub use dictionary::SPDY3_DICTIONARY;
pub use error::{Result, SpdyError};
pub use frame::{
    FLAG_FIN, FLAG_SETTINGS_CLEAR, FLAG_UNIDIRECTIONAL, Frame, Headers, Setting, frame_type,
    goaway_status, rst_status,
};
pub use zlib::{HeaderCompressor, HeaderDecompressor, decode_block, encode_block};
