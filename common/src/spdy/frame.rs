//! SPDY/3.1 frame types and header name/value blocks (decoded form; no I/O).

use bytes::Bytes;

/// `FIN` flag of SYN_STREAM, SYN_REPLY, HEADERS and DATA: the sender's half is closed.
pub const FLAG_FIN: u8 = 0x01;
/// `UNIDIRECTIONAL` flag of SYN_STREAM.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// `CLEAR_SETTINGS` flag of SETTINGS.
pub const FLAG_SETTINGS_CLEAR: u8 = 0x01;

/// Control frame type numbers (SPDY/3 §2.6).
pub mod frame_type {
    /// SYN_STREAM.
    pub const SYN_STREAM: u16 = 1;
    /// SYN_REPLY.
    pub const SYN_REPLY: u16 = 2;
    /// RST_STREAM.
    pub const RST_STREAM: u16 = 3;
    /// SETTINGS.
    pub const SETTINGS: u16 = 4;
    /// PING.
    pub const PING: u16 = 6;
    /// GOAWAY.
    pub const GOAWAY: u16 = 7;
    /// HEADERS.
    pub const HEADERS: u16 = 8;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u16 = 9;
}

/// RST_STREAM status codes.
pub mod rst_status {
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// INVALID_STREAM.
    pub const INVALID_STREAM: u32 = 2;
    /// REFUSED_STREAM.
    pub const REFUSED_STREAM: u32 = 3;
    /// UNSUPPORTED_VERSION.
    pub const UNSUPPORTED_VERSION: u32 = 4;
    /// CANCEL (what spdystream's `Stream.Reset` sends).
    pub const CANCEL: u32 = 5;
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: u32 = 6;
    /// FLOW_CONTROL_ERROR.
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    /// STREAM_IN_USE.
    pub const STREAM_IN_USE: u32 = 8;
    /// STREAM_ALREADY_CLOSED.
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
    /// INVALID_CREDENTIALS.
    pub const INVALID_CREDENTIALS: u32 = 10;
    /// FRAME_TOO_LARGE.
    pub const FRAME_TOO_LARGE: u32 = 11;
}

/// GOAWAY status codes.
pub mod goaway_status {
    /// OK.
    pub const OK: u32 = 0;
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: u32 = 2;
}

/// A header name/value block, in wire order. Names are stored as received (spdystream
/// sends them lower-case); look them up with [`Headers::get`], which ignores case.
/// A value holding several values joined by NUL is kept joined (see [`Headers::get_all`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// An empty block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one pair (builder style).
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.push((name.into(), value.into()));
        self
    }

    /// The first value of `name` (case-insensitive); a NUL-joined value yields its first part.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.split('\0').next())
    }

    /// Every value of `name` (case-insensitive), NUL-joined values split apart.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split('\0'))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the block has no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One SETTINGS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Per-entry flags (PERSIST_VALUE 0x1, PERSISTED 0x2).
    pub flags: u8,
    /// Setting ID (24 bits).
    pub id: u32,
    /// Value.
    pub value: u32,
}

/// A decoded SPDY/3.1 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream.
    SynStream {
        /// Stream ID (31 bits; odd from the client, even from the server).
        stream_id: u32,
        /// Associated stream ID (0 = none).
        associated_id: u32,
        /// Priority, 0 (highest) to 7.
        priority: u8,
        /// Credential slot (SPDY/3; 0).
        slot: u8,
        /// `FLAG_FIN` / `FLAG_UNIDIRECTIONAL`.
        flags: u8,
        /// Request headers.
        headers: Headers,
    },
    /// Accepts a stream.
    SynReply {
        /// Stream ID.
        stream_id: u32,
        /// `FLAG_FIN`.
        flags: u8,
        /// Reply headers (empty for Kubernetes).
        headers: Headers,
    },
    /// Aborts a stream.
    RstStream {
        /// Stream ID.
        stream_id: u32,
        /// A [`rst_status`] code.
        status: u32,
    },
    /// Connection settings (spdystream ignores them).
    Settings {
        /// `FLAG_SETTINGS_CLEAR`.
        flags: u8,
        /// Entries.
        entries: Vec<Setting>,
    },
    /// Liveness check; the receiver echoes a PING whose ID parity differs from its own.
    Ping {
        /// PING ID.
        id: u32,
    },
    /// Ends the connection.
    GoAway {
        /// Highest stream ID the sender processed.
        last_good_stream_id: u32,
        /// A [`goaway_status`] code.
        status: u32,
    },
    /// Extra headers on a stream.
    Headers {
        /// Stream ID.
        stream_id: u32,
        /// `FLAG_FIN`.
        flags: u8,
        /// Headers.
        headers: Headers,
    },
    /// Flow-control credit (Kubernetes peers neither send nor honour it).
    WindowUpdate {
        /// Stream ID (0 = connection).
        stream_id: u32,
        /// Window delta (31 bits).
        delta: u32,
    },
    /// Stream payload.
    Data {
        /// Stream ID.
        stream_id: u32,
        /// `FLAG_FIN`.
        flags: u8,
        /// Payload.
        data: Bytes,
    },
    /// A control frame of a type SPDY/3.1 does not define. The spec says to ignore it;
    /// it is surfaced so a tap can log it (spdystream itself would drop the connection).
    Unknown {
        /// Control frame type.
        frame_type: u16,
        /// Flags byte.
        flags: u8,
        /// Raw payload.
        payload: Bytes,
    },
}

impl Frame {
    /// The stream a frame belongs to, if it is stream-scoped.
    pub fn stream_id(&self) -> Option<u32> {
        match self {
            Frame::SynStream { stream_id, .. }
            | Frame::SynReply { stream_id, .. }
            | Frame::RstStream { stream_id, .. }
            | Frame::Headers { stream_id, .. }
            | Frame::Data { stream_id, .. } => Some(*stream_id),
            Frame::WindowUpdate { stream_id, .. } if *stream_id != 0 => Some(*stream_id),
            _ => None,
        }
    }

    /// True when the frame carries `FLAG_FIN` (SYN_STREAM, SYN_REPLY, HEADERS, DATA).
    pub fn is_fin(&self) -> bool {
        match self {
            Frame::SynStream { flags, .. }
            | Frame::SynReply { flags, .. }
            | Frame::Headers { flags, .. }
            | Frame::Data { flags, .. } => flags & FLAG_FIN != 0,
            _ => false,
        }
    }

    /// A DATA frame.
    pub fn data(stream_id: u32, data: impl Into<Bytes>, fin: bool) -> Self {
        Frame::Data {
            stream_id,
            flags: if fin { FLAG_FIN } else { 0 },
            data: data.into(),
        }
    }
}
