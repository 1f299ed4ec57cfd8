//! Session recording: the tap parsers of upgraded sessions and the recorder built on them.
//!
//! # Layout
//! - [`websocket`]: incremental WebSocket frame parser, one per direction.
//! - [`spdy`]: SPDY/3.1 tap over both directions (per-direction zlib contexts, streams by
//!   `streamtype`).
//! - [`remotecommand`]: what the streams mean (channels, exit status, resizes).
//! - [`portforward`]: port-forward metadata (ports, connections, bytes; no payload).
//! - [`redact`]: the one redaction step recorded bytes pass through.
//! - [`cast`]: the asciicast v2 writer and its chunking.
//! - [`recorder`]: the [`recorder::Recorder`] tap that ties them together and ships chunks.

pub mod cast;
pub mod portforward;
pub mod recorder;
pub mod redact;
pub mod remotecommand;
pub mod spdy;
pub mod websocket;

use crate::audit::sink::AuditSink;
use crate::forward::tap::StreamTap;
pub use crate::forward::tap::TapError;
use crate::spool::Spool;
use gatehouse_common::audit::SessionEndEvent;
use gatehouse_common::mask::text::TextDetectors;
use std::sync::Arc;

/// Makes a recorder for every session (built once at startup).
#[derive(Clone)]
pub struct Recording {
    sink: Arc<dyn AuditSink>,
    spool: Option<Arc<Spool>>,
}

impl Recording {
    /// Recordings go to `sink` (the spool, else the audit file); with a `spool`, its full policy
    /// decides whether a session may go on when the recording cannot be kept.
    pub fn new(sink: Arc<dyn AuditSink>, spool: Option<Arc<Spool>>) -> Self {
        Self { sink, spool }
    }

    /// The tap recording the session `template` describes, its text masked with
    /// `detectors` (the request's profile's; `None`: the built-in ones, never unmasked).
    pub fn tap(
        &self,
        template: &SessionEndEvent,
        detectors: Option<Arc<TextDetectors>>,
    ) -> Box<dyn StreamTap> {
        Box::new(recorder::Recorder::new(
            template,
            self.sink.clone(),
            self.spool.clone(),
            detectors.unwrap_or_else(TextDetectors::shared_builtin),
        ))
    }
}
