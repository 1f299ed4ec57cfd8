//! The session recorder: a [`StreamTap`] that follows the negotiated wire (WebSocket,
//! SPDY, SPDY tunnelled in WebSocket), records exec/attach streams as asciicast v2 and
//! port-forwards as metadata, and ships the recording as `SessionChunk` events.

use super::cast::{CastWriter, Chunk, Kind, SessionInfo};
use super::portforward::PortStats;
use super::redact::{self, Redact};
use super::remotecommand::{self, CLOSE_CHANNEL, MAX_CONTROL_STREAM, ResizeReader, Route};
use super::spdy::{self, Dir};
use super::websocket::{self, Dialect, Piece};
use crate::audit::sink::AuditSink;
use crate::forward::tap::{StreamTap, TapError};
use crate::spool::Spool;
use gatehouse_common::audit::{AuditEvent, SessionChunkEvent, SessionEndEvent, SessionKind};
use gatehouse_common::mask::text::TextDetectors;
use http::HeaderMap;
use std::sync::Arc;

/// What kubectl is told (and the session's end reason says) when a fail-closed spool
/// cannot take the recording.
pub const RECORDING_SPOOL_FULL: &str =
    "audit spool is full: the session recording cannot be kept, so the session is ended";

/// Recording bytes waiting for the spool's writer above which the relay is held back
/// (backpressure: output faster than the disk takes it slows the session down).
pub const BACKLOG_RECORDING: u64 = 4 << 20;

/// Recording bytes waiting for the spool's writer above which chunks are refused (the
/// memory bound; reached only if many sessions fill the queue at once).
pub const MAX_QUEUED_RECORDING: u64 = 32 << 20;

/// What a fail-closed agent ends a session with when its recording outruns the disk.
pub const RECORDING_BEHIND: &str =
    "the session recording is falling behind the audit spool's disk, so the session is ended";

/// The wire of the session, chosen from the 101.
enum Wire {
    /// Not yet upgraded, or not recordable (the reason).
    Unknown(String),
    /// WebSocket with channel bytes (or base64 text).
    WebSocket {
        c2u: websocket::Parser,
        u2c: websocket::Parser,
    },
    /// SPDY/3.1 directly on the connection.
    Spdy(spdy::Tap),
    /// SPDY/3.1 bytes carried in WebSocket binary messages (`SPDY/3.1+portforward.k8s.io`).
    Tunnel {
        c2u: websocket::Parser,
        u2c: websocket::Parser,
        // Boxed: the variant would otherwise double the size of every `Wire`.
        spdy: Box<spdy::Tap>,
    },
}

impl Wire {
    /// The wire of an upgrade from the API server's 101 headers.
    fn from_upgrade(headers: &HeaderMap) -> Result<Self, TapError> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .unwrap_or("")
        };
        let upgrade = header("upgrade");
        if upgrade.eq_ignore_ascii_case("spdy/3.1") {
            return Ok(Self::Spdy(spdy::Tap::new()));
        }
        if !upgrade.eq_ignore_ascii_case("websocket") {
            return Err(TapError(format!(
                "cannot record upgrade protocol {upgrade:?}"
            )));
        }
        if !header("sec-websocket-extensions").is_empty() {
            return Err(TapError(
                "cannot record a WebSocket session with extensions".into(),
            ));
        }
        let protocol = header("sec-websocket-protocol");
        let ws = |dialect| {
            (
                websocket::Parser::new(dialect, true),
                websocket::Parser::new(dialect, false),
            )
        };
        if protocol.eq_ignore_ascii_case("spdy/3.1+portforward.k8s.io") {
            let (c2u, u2c) = ws(Dialect::Raw);
            return Ok(Self::Tunnel {
                c2u,
                u2c,
                spdy: Box::new(spdy::Tap::new()),
            });
        }
        let dialect = if protocol.contains("base64.") {
            Dialect::Base64
        } else if protocol.ends_with("channel.k8s.io") || protocol.ends_with("portforward.k8s.io") {
            Dialect::Channel
        } else {
            return Err(TapError(format!(
                "cannot record WebSocket subprotocol {protocol:?}"
            )));
        };
        let (c2u, u2c) = ws(dialect);
        Ok(Self::WebSocket { c2u, u2c })
    }

    fn feed(&mut self, dir: Dir, data: &[u8], content: &mut Content) -> Result<(), TapError> {
        let from_client = dir == Dir::FromClient;
        match self {
            Self::Unknown(reason) => Err(TapError(reason.clone())),
            Self::WebSocket { c2u, u2c } => {
                let parser = if from_client { c2u } else { u2c };
                parser.feed(data, &mut |piece| match piece {
                    Piece::Data { channel, data } => content.websocket(dir, channel, data),
                    Piece::Close { .. } => Ok(()),
                })
            }
            Self::Spdy(tap) => tap.feed(dir, data, &mut |e| content.spdy(e)),
            Self::Tunnel { c2u, u2c, spdy } => {
                let parser = if from_client { c2u } else { u2c };
                parser.feed(data, &mut |piece| match piece {
                    Piece::Data { data, .. } => spdy.feed(dir, data, &mut |e| content.spdy(e)),
                    Piece::Close { .. } => Ok(()),
                })
            }
        }
    }

    /// Whether both directions stopped between frames.
    fn at_boundary(&self) -> bool {
        match self {
            Self::Unknown(_) => true,
            Self::WebSocket { c2u, u2c } => c2u.at_boundary() && u2c.at_boundary(),
            Self::Spdy(tap) => tap.at_boundary(),
            Self::Tunnel { c2u, u2c, spdy } => {
                c2u.at_boundary() && u2c.at_boundary() && spdy.at_boundary()
            }
        }
    }
}

/// What the streams carried: the recording and the session's counters.
struct Content {
    port_forward: bool,
    cast: CastWriter,
    /// Redaction of stdout, stderr, stdin (the one place recorded bytes pass through).
    redact: [Box<dyn Redact>; 3],
    redacted: Vec<u8>,
    stdin_bytes: u64,
    output_bytes: u64,
    error: Vec<u8>,
    resize: ResizeReader,
    ports: PortStats,
    chunks: Vec<Chunk>,
}

impl Content {
    fn websocket(&mut self, dir: Dir, channel: u8, data: &[u8]) -> Result<(), TapError> {
        if self.port_forward {
            self.ports.websocket(channel, dir == Dir::FromClient, data);
            return Ok(());
        }
        if channel == CLOSE_CHANNEL {
            if dir == Dir::FromClient && data.contains(&0) {
                self.closed(Route::Stdin);
            }
            return Ok(());
        }
        self.stream(dir, Route::from_channel(channel), data)
    }

    fn spdy(&mut self, event: spdy::Event<'_>) -> Result<(), TapError> {
        match event {
            spdy::Event::Data { dir, route, data } => self.stream(dir, route, data),
            spdy::Event::Opened(Route::PortData(port)) => {
                self.ports.opened(port);
                Ok(())
            }
            spdy::Event::Opened(_) => Ok(()),
            spdy::Event::Closed(route) => {
                self.closed(route);
                Ok(())
            }
        }
    }

    fn stream(&mut self, dir: Dir, route: Route, data: &[u8]) -> Result<(), TapError> {
        let from_client = dir == Dir::FromClient;
        match route {
            Route::Stdin if from_client && !self.port_forward => {
                self.stdin_bytes += data.len() as u64;
                self.record(2, data);
            }
            Route::Stdout | Route::Stderr if !from_client && !self.port_forward => {
                self.output_bytes += data.len() as u64;
                self.record(usize::from(route == Route::Stderr), data);
            }
            Route::Error if !from_client => {
                let room = MAX_CONTROL_STREAM.saturating_sub(self.error.len());
                self.error.extend_from_slice(&data[..data.len().min(room)]);
            }
            Route::Resize if from_client && !self.port_forward => {
                for size in self.resize.push(data) {
                    self.cast.resize(size, &mut self.chunks);
                }
            }
            Route::PortData(port) => self.ports.bytes(port, from_client, data.len()),
            _ => {}
        }
        Ok(())
    }

    /// Redacts `data` of stream `i` (stdout, stderr, stdin) and records it.
    fn record(&mut self, i: usize, data: &[u8]) {
        self.redacted.clear();
        self.redact[i].push(data, &mut self.redacted);
        self.write_redacted(i);
    }

    fn write_redacted(&mut self, i: usize) {
        if self.redacted.is_empty() {
            return;
        }
        let kind = if i == 2 { Kind::Input } else { Kind::Output };
        self.cast
            .data(kind, i == 1, &self.redacted, &mut self.chunks);
    }

    fn closed(&mut self, route: Route) {
        let i = match route {
            Route::Stdout => 0,
            Route::Stderr => 1,
            Route::Stdin => 2,
            _ => return,
        };
        self.redacted.clear();
        self.redact[i].finish(&mut self.redacted);
        self.write_redacted(i);
    }
}

/// Where chunks go: the event pipeline, checked against the spool's full policy.
struct Shipper {
    sink: Arc<dyn AuditSink>,
    spool: Option<Arc<Spool>>,
    session_id: String,
    cluster: String,
    namespace: String,
    user: String,
}

impl Shipper {
    /// Hands `chunks` over (the sink only queues: the relay never waits for the disk).
    /// `check`: with a fail-closed spool that has no room, refuse (ends the session).
    fn ship(&mut self, chunks: &mut Vec<Chunk>, check: bool) -> Result<(), TapError> {
        if chunks.is_empty() {
            return Ok(());
        }
        if check && let Some(spool) = &self.spool {
            let fail_closed = spool.full_policy() == crate::spool::FullPolicy::FailClosed;
            if !spool.accepts_requests() {
                chunks.clear();
                return Err(TapError(RECORDING_SPOOL_FULL.into()));
            }
            if spool.queued_recording_bytes() > MAX_QUEUED_RECORDING {
                chunks.clear();
                if fail_closed {
                    return Err(TapError(RECORDING_BEHIND.into()));
                }
                // Keep-serving: the chunks are dropped; the replay shows the gap.
                tracing::error!(session_id = %self.session_id, "recording chunks dropped: the spool writer is behind");
                return Ok(());
            }
        }
        for chunk in chunks.drain(..) {
            self.sink.emit(&AuditEvent::SessionChunk(SessionChunkEvent {
                event_id: uuid::Uuid::new_v4().to_string(),
                session_id: self.session_id.clone(),
                cluster: self.cluster.clone(),
                namespace: self.namespace.clone(),
                user: self.user.clone(),
                time: chrono::Utc::now(),
                seq: chunk.seq,
                stream: chunk.stream.to_string(),
                data: chunk.data,
            }));
        }
        Ok(())
    }
}

/// Records one session (see the module docs).
pub struct Recorder {
    wire: Wire,
    content: Content,
    shipper: Shipper,
    failed: Option<TapError>,
}

impl Recorder {
    /// A recorder for the session `template` describes.
    pub fn new(
        template: &SessionEndEvent,
        sink: Arc<dyn AuditSink>,
        spool: Option<Arc<Spool>>,
        detectors: Arc<TextDetectors>,
    ) -> Self {
        let exec = template.exec.clone().unwrap_or_default();
        let info = SessionInfo {
            session_id: template.session_id.clone(),
            user: template.user.clone(),
            namespace: template.namespace.clone(),
            pod: template.pod.clone(),
            container: exec.container,
            command: exec.command,
            tty: exec.tty,
            cluster: template.cluster.clone(),
        };
        Self {
            wire: Wire::Unknown("session recorded before its upgrade".into()),
            content: Content {
                port_forward: template.kind == SessionKind::PortForward,
                cast: CastWriter::new(info),
                redact: [
                    redact::for_stream(&detectors),
                    redact::for_stream(&detectors),
                    redact::for_stream(&detectors),
                ],
                redacted: Vec::new(),
                stdin_bytes: 0,
                output_bytes: 0,
                error: Vec::new(),
                resize: ResizeReader::default(),
                ports: PortStats::default(),
                chunks: Vec::new(),
            },
            shipper: Shipper {
                sink,
                spool,
                session_id: template.session_id.clone(),
                cluster: template.cluster.clone(),
                namespace: template.namespace.clone(),
                user: template.user.clone(),
            },
            failed: None,
        }
    }

    /// Once one direction failed the session is over: every later call fails too.
    fn feed(&mut self, dir: Dir, data: &[u8]) -> Result<(), TapError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self
            .wire
            .feed(dir, data, &mut self.content)
            .and_then(|()| self.shipper.ship(&mut self.content.chunks, true));
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }
}

impl StreamTap for Recorder {
    fn backlogged(&self) -> bool {
        self.shipper
            .spool
            .as_ref()
            .is_some_and(|s| s.queued_recording_bytes() > BACKLOG_RECORDING)
    }

    fn upgraded(&mut self, headers: &HeaderMap) -> Result<(), TapError> {
        let wire = Wire::from_upgrade(headers)?;
        self.wire = wire;
        Ok(())
    }

    fn client_to_upstream(&mut self, data: &[u8]) -> Result<(), TapError> {
        self.feed(Dir::FromClient, data)
    }

    fn upstream_to_client(&mut self, data: &[u8]) -> Result<(), TapError> {
        self.feed(Dir::ToClient, data)
    }

    fn finish(&mut self, end: &mut SessionEndEvent) {
        let c = &mut self.content;
        if c.port_forward {
            end.ports = c.ports.summary();
        } else {
            for route in [Route::Stdout, Route::Stderr, Route::Stdin] {
                c.closed(route);
            }
            c.cast.finish(&mut c.chunks);
            // The last chunks go out whatever the spool says: the session is over, and a
            // full spool drops and counts them.
            let _ = self.shipper.ship(&mut c.chunks, false);
            end.recording_chunks = c.cast.chunks();
            end.exit_code = remotecommand::exit_code(&c.error);
            end.stdin_bytes = c.stdin_bytes;
            end.output_bytes = c.output_bytes;
            if let Some(size) = c.cast.first_size() {
                end.terminal = format!("{}x{}", size.width, size.height);
            }
        }
        let ordinary = matches!(end.end_reason.as_str(), "closed" | "client_eof");
        if ordinary && !self.wire.at_boundary() {
            end.end_reason = "tap: stream ended inside a frame".into();
        }
    }
}

#[cfg(test)]
mod tests;
