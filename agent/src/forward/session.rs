//! Upgraded sessions after the 101: the byte relay with its tap and counters, the one
//! `SessionEnd` audit event per session, and the registry that lets shutdown drain them.

mod goodbye;
mod limits;

pub(crate) use goodbye::Goodbye;
use goodbye::Observe;
use limits::Activity;
pub use limits::SessionLimits;

use super::tap::{StreamTap, TapError};
use crate::audit::sink::AuditSink;
use gatehouse_common::audit::{AuditEvent, SessionEndEvent};
use http::HeaderMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Size of each direction's relay buffer: the only buffering between the two sides.
const CHUNK: usize = 16 * 1024;

/// How often a relay held back by a backlogged tap looks again.
const TAP_BACKLOG_POLL: Duration = Duration::from_millis(2);

/// After the API server has closed its side, how long kubectl gets to close its own before
/// the agent drops the connection (kubectl answers a close at once; this bounds a stuck one).
const CLIENT_LINGER: Duration = Duration::from_secs(5);

/// At shutdown, how long a session gets to finish the frame in flight, tell kubectl why it
/// ends and see kubectl close (kubectl closes as soon as it has read the message).
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the request path knows when an upgrade request arrives.
pub struct SessionStart {
    /// Ids, cluster, node, user, groups, kind, namespace, pod, exec params; the relay
    /// fills protocol, started, ended, byte counts and end_reason.
    pub template: SessionEndEvent,
    /// Where the one `SessionEnd` event goes.
    pub sink: Arc<dyn AuditSink>,
    /// Optional inline tap (session recording).
    pub tap: Option<Box<dyn StreamTap>>,
    /// Idle timeout and maximum length.
    pub limits: SessionLimits,
}

/// The negotiated subprotocol of a 101: WebSocket's `Sec-WebSocket-Protocol`, else SPDY's
/// `X-Stream-Protocol-Version`; empty if the API server named none.
pub fn negotiated_protocol(headers: &HeaderMap) -> String {
    ["sec-websocket-protocol", "x-stream-protocol-version"]
        .iter()
        .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// Open upgraded sessions, so that shutdown can wait for them and then end the rest.
/// Cheap to clone; every clone is the same registry.
#[derive(Clone, Default)]
pub struct Sessions {
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Sessions {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of sessions still running.
    pub fn open(&self) -> usize {
        self.tracker.len()
    }

    /// Runs `fut` as a tracked session task.
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(fut);
    }

    /// Resolves when the agent asks sessions to end.
    pub(crate) fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits up to `deadline` for open sessions to end by themselves, then ends the rest
    /// (their `SessionEnd` says `agent_shutdown`) and waits for their events to be written.
    /// Returns how many sessions had to be ended.
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.tracker.close();
        if tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok()
        {
            return 0;
        }
        let remaining = self.tracker.len();
        tracing::warn!(
            sessions = remaining,
            "drain deadline reached; ending open sessions"
        );
        self.shutdown.cancel();
        // Cancelled relays tell kubectl why, bounded by GOODBYE_TIMEOUT, and emit their event.
        self.tracker.wait().await;
        remaining
    }
}

/// The session's state shared by both copy directions; emits the one `SessionEnd`, also
/// if the relay task is dropped mid-way.
struct EndGuard {
    sink: Option<Arc<dyn AuditSink>>,
    event: SessionEndEvent,
    tap: Option<Mutex<Box<dyn StreamTap>>>,
    from_client: AtomicU64,
    to_client: AtomicU64,
    request_id: String,
    limits: SessionLimits,
    activity: Activity,
}

impl EndGuard {
    fn new(start: Option<SessionStart>, protocol: String, request_id: String) -> Self {
        let (mut event, sink, tap, limits) = match start {
            Some(s) => (s.template, Some(s.sink), s.tap.map(Mutex::new), s.limits),
            None => (
                SessionEndEvent::default(),
                None,
                None,
                SessionLimits::default(),
            ),
        };
        if event.event_id.is_empty() {
            event.event_id = uuid::Uuid::new_v4().to_string();
        }
        if event.request_id.is_empty() {
            event.request_id = request_id.clone();
        }
        event.protocol = protocol;
        event.started = chrono::Utc::now();
        Self {
            sink,
            event,
            tap,
            from_client: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            request_id,
            limits,
            activity: Activity::new(),
        }
    }

    /// Hands a chunk to the tap; `Err` carries the end reason.
    fn tap(&self, direction: Direction, data: &[u8]) -> Result<(), String> {
        self.activity.touch();
        let Some(tap) = &self.tap else {
            return Ok(());
        };
        // A poisoned lock means a tap panicked: fail closed and end the session.
        let mut tap = tap.lock().map_err(|_| "tap: failed".to_string())?;
        let result = match direction {
            Direction::ClientToUpstream => tap.client_to_upstream(data),
            Direction::UpstreamToClient => tap.upstream_to_client(data),
        };
        result.map_err(|TapError(reason)| format!("tap: {reason}"))
    }

    /// Whether the tap asks the relay to wait before reading more.
    fn tap_backlogged(&self) -> bool {
        self.tap
            .as_ref()
            .and_then(|t| t.lock().ok().map(|t| t.backlogged()))
            .unwrap_or(false)
    }

    fn counter(&self, direction: Direction) -> &AtomicU64 {
        match direction {
            Direction::ClientToUpstream => &self.from_client,
            Direction::UpstreamToClient => &self.to_client,
        }
    }

    fn finish(&mut self, reason: &str) {
        if self.event.end_reason.is_empty() {
            self.event.end_reason = reason.to_string();
        } else {
            return; // already finished
        }
        let event = &mut self.event;
        event.ended = chrono::Utc::now();
        event.bytes_from_client = self.from_client.load(Ordering::Relaxed);
        event.bytes_to_client = self.to_client.load(Ordering::Relaxed);
        event.duration_ms = (event.ended - event.started)
            .num_microseconds()
            .unwrap_or(0) as f64
            / 1000.0;
        if let Some(tap) = &self.tap
            && let Ok(mut tap) = tap.lock()
        {
            tap.finish(event);
        }
        tracing::info!(
            request_id = %self.request_id, session_id = %event.session_id,
            protocol = %event.protocol, bytes_from_client = event.bytes_from_client,
            bytes_to_client = event.bytes_to_client, end_reason = %event.end_reason,
            exit_code = ?event.exit_code, recording_chunks = event.recording_chunks,
            "upgraded session ended"
        );
        if let Some(sink) = &self.sink {
            sink.emit(&AuditEvent::SessionEnd(event.clone()));
        }
    }
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.finish("aborted");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ClientToUpstream,
    UpstreamToClient,
}

/// One direction's relay buffer and the part of it read but not yet written, kept outside
/// the copy future so that, when shutdown drops that future, the goodbye knows exactly
/// which bytes kubectl has received.
struct Pipe {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Pipe {
    fn new() -> Self {
        Self {
            buf: vec![0u8; CHUNK],
            start: 0,
            end: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
}

/// Copies one direction chunk by chunk (tap, write, flush, count) until EOF, then
/// half-closes the writer so the other side sees EOF while the reverse direction goes on
/// (kubectl cp ends stdin and still reads the tar stream back). Cancel-safe: a read or a
/// write that did not complete moved no bytes, and `pipe` and `observer` always describe
/// what was written.
async fn pump<R, W, O>(
    from: &mut R,
    to: &mut W,
    pipe: &mut Pipe,
    observer: &mut O,
    guard: &EndGuard,
    direction: Direction,
) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    O: Observe,
{
    let (read_side, write_side) = match direction {
        Direction::ClientToUpstream => ("client", "upstream"),
        Direction::UpstreamToClient => ("upstream", "client"),
    };
    loop {
        if pipe.pending().is_empty() {
            // Backpressure from the recording (its spool writer is behind): wait, reading
            // nothing, so that memory stays bounded; cancel-safe, no byte has moved.
            while guard.tap_backlogged() {
                tokio::time::sleep(TAP_BACKLOG_POLL).await;
            }
            let n = match from.read(&mut pipe.buf).await {
                Ok(0) => break,
                Ok(n) => n,
                // Peers commonly close TLS without close_notify: an ordinary end of stream.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(format!("{read_side}_error: {e}")),
            };
            guard.tap(direction, &pipe.buf[..n])?;
            (pipe.start, pipe.end) = (0, n);
        }
        write_pending(to, pipe, observer, guard, direction, usize::MAX)
            .await
            .map_err(|e| format!("{write_side}_error: {e}"))?;
        to.flush()
            .await
            .map_err(|e| format!("{write_side}_error: {e}"))?;
    }
    // The peer may already be gone; the other direction reports that if it matters.
    let _ = to.shutdown().await;
    Ok(())
}

/// Writes up to `limit` pending bytes of `pipe`, observing and counting what was written.
async fn write_pending<W, O>(
    to: &mut W,
    pipe: &mut Pipe,
    observer: &mut O,
    guard: &EndGuard,
    direction: Direction,
    limit: usize,
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    O: Observe,
{
    let stop = pipe.end.min(pipe.start.saturating_add(limit));
    while pipe.start < stop {
        let n = to.write(&pipe.buf[pipe.start..stop]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        observer.observe(&pipe.buf[pipe.start..pipe.start + n]);
        guard
            .counter(direction)
            .fetch_add(n as u64, Ordering::Relaxed);
        pipe.start += n;
    }
    Ok(())
}

/// The upgraded connection's two directions and the relay state the goodbye needs.
struct Halves<CR, CW, UR> {
    client_r: CR,
    client_w: CW,
    upstream_r: UR,
    to_client: Pipe,
}

/// At shutdown: finishes the API server's frame in flight, writes the goodbye (error
/// channel message, close), closes kubectl's side and lets kubectl close its own, all
/// within [`GOODBYE_TIMEOUT`]. Returns whether the goodbye was written.
async fn say_goodbye<CR, CW, UR>(
    halves: &mut Halves<CR, CW, UR>,
    goodbye: &mut Goodbye,
    guard: &EndGuard,
    message: &str,
) -> bool
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    UR: AsyncRead + Unpin,
{
    let lingered = async {
        let written = matches!(
            write_farewell(halves, goodbye, guard, message).await,
            Ok(true)
        );
        let _ = halves.client_w.shutdown().await;
        // Closing with kubectl's bytes unread would reset the connection and could destroy
        // the goodbye before kubectl reads it: read until kubectl closes.
        let mut sink = vec![0u8; 4096];
        while matches!(halves.client_r.read(&mut sink).await, Ok(n) if n > 0) {}
        written
    };
    tokio::time::timeout(GOODBYE_TIMEOUT, lingered)
        .await
        .unwrap_or(false)
}

/// Completes the API server's current frame (the goodbye goes between frames), then
/// writes the goodbye. `Ok(false)` if it could not be said.
async fn write_farewell<CR, CW, UR>(
    halves: &mut Halves<CR, CW, UR>,
    goodbye: &mut Goodbye,
    guard: &EndGuard,
    message: &str,
) -> std::io::Result<bool>
where
    CW: AsyncWrite + Unpin,
    UR: AsyncRead + Unpin,
{
    let dir = Direction::UpstreamToClient;
    while !goodbye.upstream.at_frame_boundary() && !goodbye.upstream.is_lost() {
        let want = usize::try_from(goodbye.upstream.bytes_to_boundary()).unwrap_or(CHUNK);
        let pipe = &mut halves.to_client;
        if pipe.pending().is_empty() {
            let n = halves
                .upstream_r
                .read(&mut pipe.buf[..want.min(CHUNK)])
                .await?;
            if n == 0 || guard.tap(dir, &pipe.buf[..n]).is_err() {
                return Ok(false);
            }
            (pipe.start, pipe.end) = (0, n);
        }
        write_pending(
            &mut halves.client_w,
            pipe,
            &mut goodbye.upstream,
            guard,
            dir,
            want,
        )
        .await?;
    }
    let Some(farewell) = goodbye.farewell(message) else {
        return Ok(false);
    };
    halves.client_w.write_all(&farewell).await?;
    halves.client_w.flush().await?;
    Ok(true)
}

/// Relays one session between kubectl's upgraded connection and the API server's until
/// both sides are done, an error or the tap ends it, or `shutdown` fires (then kubectl is
/// told why, see [`goodbye`]); then emits the session's `SessionEnd`. Returns the end
/// reason.
pub(crate) async fn relay_streams<C, U>(
    client: C,
    upstream: U,
    start: Option<SessionStart>,
    protocol: String,
    request_id: String,
    shutdown: CancellationToken,
    mut goodbye: Option<Goodbye>,
) -> String
where
    C: AsyncRead + AsyncWrite + Send,
    U: AsyncRead + AsyncWrite + Send,
{
    let mut guard = EndGuard::new(start, protocol, request_id);
    let (client_r, client_w) = tokio::io::split(client);
    let (upstream_r, mut upstream_w) = tokio::io::split(upstream);
    let mut halves = Halves {
        client_r,
        client_w,
        upstream_r,
        to_client: Pipe::new(),
    };
    let mut to_upstream = Pipe::new();
    let mut limit_hit = None;
    let reason = {
        let (mut seen_from_client, mut seen_to_client) = match goodbye.as_mut() {
            Some(g) => (Some(&mut g.client), Some(&mut g.upstream)),
            None => (None, None),
        };
        let c2u = pump(
            &mut halves.client_r,
            &mut upstream_w,
            &mut to_upstream,
            &mut seen_from_client,
            &guard,
            Direction::ClientToUpstream,
        );
        let u2c = pump(
            &mut halves.upstream_r,
            &mut halves.client_w,
            &mut halves.to_client,
            &mut seen_to_client,
            &guard,
            Direction::UpstreamToClient,
        );
        tokio::pin!(c2u, u2c);
        let (mut client_done, mut upstream_done) = (false, false);
        loop {
            let linger = async {
                if upstream_done {
                    tokio::time::sleep(CLIENT_LINGER).await
                } else {
                    std::future::pending().await
                }
            };
            tokio::select! {
                r = &mut c2u, if !client_done => match r {
                    Ok(()) if upstream_done => break "closed".to_string(),
                    Ok(()) => client_done = true,
                    Err(reason) => break reason,
                },
                r = &mut u2c, if !upstream_done => match r {
                    Ok(()) if client_done => break "client_eof".to_string(),
                    Ok(()) => upstream_done = true,
                    Err(reason) => break reason,
                },
                () = linger => break "closed".to_string(),
                () = shutdown.cancelled() => break "agent_shutdown".to_string(),
                limit = guard.activity.expired(guard.limits) => {
                    limit_hit = Some(limit);
                    break limit.end_reason().to_string();
                }
            }
        }
    };
    let message = match limit_hit {
        Some(limit) => Some(limit.message()),
        None if reason == "agent_shutdown" => Some(goodbye::SHUTDOWN_MESSAGE.to_string()),
        // The tap ended it (unrecordable input, recording cannot be kept): say why.
        None => reason
            .strip_prefix("tap: ")
            .map(|why| format!("the Gatehouse agent ended this session: {why}")),
    };
    if let (Some(message), Some(goodbye)) = (message, goodbye.as_mut()) {
        let told = say_goodbye(&mut halves, goodbye, &guard, &message).await;
        tracing::debug!(told, reason = %reason, "goodbye to the client of a session the agent ended");
    }
    guard.finish(&reason);
    // The streams outlive the pumps so that the event is out before the sockets close:
    // whoever sees the session end (kubectl, a test) finds it recorded.
    drop((halves, upstream_w));
    reason
}

/// Records a session whose upgrade failed after the 101 was sent (one side's upgraded
/// connection never came): still exactly one `SessionEnd`.
pub(crate) fn upgrade_failed(
    start: Option<SessionStart>,
    protocol: String,
    request_id: String,
    error: &str,
) {
    let mut guard = EndGuard::new(start, protocol, request_id);
    guard.finish(&format!("upgrade_failed: {error}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{DuplexStream, duplex};

    #[derive(Default)]
    struct Collect(Mutex<Vec<SessionEndEvent>>);
    impl AuditSink for Collect {
        fn emit(&self, event: &AuditEvent) {
            if let (AuditEvent::SessionEnd(e), Ok(mut seen)) = (event, self.0.lock()) {
                seen.push(e.clone());
            }
        }
    }
    impl Collect {
        fn events(&self) -> Vec<SessionEndEvent> {
            self.0.lock().map(|s| s.clone()).unwrap_or_default()
        }
    }

    /// Client bytes, upstream bytes, end reasons passed to `finish`.
    type Seen = (Vec<u8>, Vec<u8>, Vec<String>);

    /// Records what it sees; fails the session when it sees `fail_on` from the client.
    #[derive(Clone, Default)]
    struct Recorder {
        seen: Arc<Mutex<Seen>>,
        fail_on: Option<u8>,
    }
    impl StreamTap for Recorder {
        fn client_to_upstream(&mut self, data: &[u8]) -> Result<(), TapError> {
            if let Some(b) = self.fail_on
                && data.contains(&b)
            {
                return Err(TapError("forbidden input".into()));
            }
            if let Ok(mut s) = self.seen.lock() {
                s.0.extend_from_slice(data);
            }
            Ok(())
        }
        fn upstream_to_client(&mut self, data: &[u8]) -> Result<(), TapError> {
            if let Ok(mut s) = self.seen.lock() {
                s.1.extend_from_slice(data);
            }
            Ok(())
        }
        fn finish(&mut self, end: &mut SessionEndEvent) {
            if let Ok(mut s) = self.seen.lock() {
                s.2.push(end.end_reason.clone());
            }
        }
    }

    fn start(sink: &Arc<Collect>, tap: Option<Recorder>) -> SessionStart {
        SessionStart {
            template: SessionEndEvent {
                session_id: "s1".into(),
                user: "alice".into(),
                pod: "web-0".into(),
                ..SessionEndEvent::default()
            },
            sink: sink.clone(),
            tap: tap.map(|t| Box::new(t) as Box<dyn StreamTap>),
            limits: SessionLimits::default(),
        }
    }

    /// Starts a relay between two in-memory pipes; returns kubectl's and the API server's
    /// ends and the relay task.
    fn spawn_relay(
        session: Option<SessionStart>,
        shutdown: CancellationToken,
    ) -> (DuplexStream, DuplexStream, tokio::task::JoinHandle<String>) {
        let (kubectl, agent_client_side) = duplex(64);
        let (agent_upstream_side, apiserver) = duplex(64);
        let task = tokio::spawn(relay_streams(
            agent_client_side,
            agent_upstream_side,
            session,
            "v5.channel.k8s.io".into(),
            "r1".into(),
            shutdown,
            None,
        ));
        (kubectl, apiserver, task)
    }

    async fn bounded<F: std::future::Future>(f: F) -> F::Output {
        match tokio::time::timeout(Duration::from_secs(10), f).await {
            Ok(v) => v,
            Err(_) => panic!("test step did not finish in time"),
        }
    }

    #[tokio::test]
    async fn relays_both_ways_in_order_with_half_close_and_one_event() -> anyhow::Result<()> {
        let sink = Arc::new(Collect::default());
        let tap = Recorder::default();
        let (mut kubectl, mut apiserver, task) = spawn_relay(
            Some(start(&sink, Some(tap.clone()))),
            CancellationToken::new(),
        );
        // More than the pipe and chunk sizes, so the relay must loop and respect backpressure.
        let stdin: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let stdin_copy = stdin.clone();
        let client = tokio::spawn(async move {
            kubectl.write_all(&stdin_copy).await?;
            // stdin ends (kubectl cp): the output must still come back afterwards.
            kubectl.shutdown().await?;
            let mut out = Vec::new();
            kubectl.read_to_end(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        });
        let mut got = Vec::new();
        bounded(apiserver.read_to_end(&mut got)).await?;
        assert_eq!(got, stdin, "upstream sees every client byte in order");
        let stdout = b"tar stream after stdin EOF".repeat(1000);
        apiserver.write_all(&stdout).await?;
        apiserver.shutdown().await?;
        let out = bounded(client).await??;
        assert_eq!(
            out, stdout,
            "client sees every upstream byte after its own EOF"
        );
        let reason = bounded(task).await?;
        assert_eq!(reason, "client_eof", "kubectl ended stdin first");
        let events = sink.events();
        assert_eq!(events.len(), 1, "exactly one SessionEnd");
        let e = &events[0];
        assert_eq!(e.session_id, "s1");
        assert_eq!(e.request_id, "r1");
        assert_eq!(e.user, "alice");
        assert_eq!(e.protocol, "v5.channel.k8s.io");
        assert_eq!(e.bytes_from_client, stdin.len() as u64);
        assert_eq!(e.bytes_to_client, stdout.len() as u64);
        assert_eq!(e.end_reason, "client_eof");
        assert!(!e.event_id.is_empty());
        assert!(e.ended >= e.started);
        let seen = tap.seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(seen.0, stdin, "tap sees client bytes in order");
        assert_eq!(seen.1, stdout, "tap sees upstream bytes in order");
        assert_eq!(seen.2, vec!["client_eof".to_string()], "tap finished once");
        Ok(())
    }

    #[tokio::test]
    async fn tap_error_ends_the_session_with_its_reason() -> anyhow::Result<()> {
        let sink = Arc::new(Collect::default());
        let tap = Recorder {
            fail_on: Some(b'!'),
            ..Recorder::default()
        };
        let (mut kubectl, mut apiserver, task) = spawn_relay(
            Some(start(&sink, Some(tap.clone()))),
            CancellationToken::new(),
        );
        kubectl.write_all(b"ls\n").await?;
        let mut buf = [0u8; 3];
        bounded(apiserver.read_exact(&mut buf)).await?;
        kubectl.write_all(b"rm -rf /!\n").await?;
        let reason = bounded(task).await?;
        assert_eq!(reason, "tap: forbidden input");
        // The refused chunk never reached the API server; its connection is closed.
        let mut rest = Vec::new();
        bounded(apiserver.read_to_end(&mut rest)).await?;
        assert!(rest.is_empty(), "refused bytes were forwarded: {rest:?}");
        let events = sink.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].end_reason, "tap: forbidden input");
        assert_eq!(events[0].bytes_from_client, 3);
        Ok(())
    }

    #[tokio::test]
    async fn upstream_closing_first_ends_the_session() -> anyhow::Result<()> {
        let sink = Arc::new(Collect::default());
        let (mut kubectl, mut apiserver, task) =
            spawn_relay(Some(start(&sink, None)), CancellationToken::new());
        apiserver.write_all(b"exit status 0").await?;
        drop(apiserver);
        let mut out = Vec::new();
        bounded(kubectl.read_to_end(&mut out)).await?;
        assert_eq!(out, b"exit status 0");
        drop(kubectl);
        assert_eq!(bounded(task).await?, "closed");
        assert_eq!(sink.events().len(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn client_vanishing_is_an_end_not_a_hang() -> anyhow::Result<()> {
        let sink = Arc::new(Collect::default());
        let (kubectl, mut apiserver, task) =
            spawn_relay(Some(start(&sink, None)), CancellationToken::new());
        drop(kubectl);
        // The API server sees EOF on stdin and then finds nobody to write to.
        let mut buf = Vec::new();
        bounded(apiserver.read_to_end(&mut buf)).await?;
        let _ = apiserver.write_all(&[0u8; 1024]).await;
        let reason = bounded(task).await?;
        assert!(
            reason == "client_eof" || reason.starts_with("client_error"),
            "unexpected reason {reason}"
        );
        assert_eq!(sink.events().len(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn drain_waits_for_sessions_then_ends_the_rest_as_agent_shutdown() -> anyhow::Result<()> {
        let sessions = Sessions::new();
        let sink = Arc::new(Collect::default());
        // One session that ends by itself during the drain, one that never would.
        let mut pipes = Vec::new();
        for id in ["quick", "stuck"] {
            let (kubectl, client_side) = duplex(64);
            let (upstream_side, apiserver) = duplex(64);
            let mut s = start(&sink, None);
            s.template.session_id = id.into();
            sessions.spawn(relay_streams(
                client_side,
                upstream_side,
                Some(s),
                String::new(),
                id.into(),
                sessions.shutdown_token(),
                None,
            ));
            pipes.push((kubectl, apiserver));
        }
        assert_eq!(sessions.open(), 2);
        let (quick_kubectl, quick_api) = pipes.remove(0);
        let drain = tokio::spawn({
            let sessions = sessions.clone();
            async move { sessions.drain(Duration::from_millis(300)).await }
        });
        drop((quick_kubectl, quick_api));
        let ended = bounded(drain).await?;
        assert_eq!(ended, 1, "only the stuck session is ended by the agent");
        assert_eq!(sessions.open(), 0);
        let mut events = sink.events();
        events.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        assert_eq!(events.len(), 2, "one event per session: {events:?}");
        assert_eq!(events[0].session_id, "quick");
        assert_ne!(events[0].end_reason, "agent_shutdown");
        assert_eq!(events[1].session_id, "stuck");
        assert_eq!(events[1].end_reason, "agent_shutdown");
        // The stuck session's kubectl sees its connection closed.
        let (mut stuck_kubectl, _api) = pipes.remove(0);
        let mut rest = Vec::new();
        bounded(stuck_kubectl.read_to_end(&mut rest)).await?;
        Ok(())
    }

    /// At shutdown the relay completes the API server's frame in flight, then kubectl gets
    /// the error-channel message and a close, and the session still ends `agent_shutdown`.
    #[tokio::test]
    async fn shutdown_finishes_the_frame_in_flight_then_says_goodbye() -> anyhow::Result<()> {
        let mut upgrade = HeaderMap::new();
        upgrade.insert("upgrade", "websocket".parse()?);
        upgrade.insert("sec-websocket-protocol", "v5.channel.k8s.io".parse()?);
        let goodbye = Goodbye::for_upgrade(&upgrade);
        assert!(goodbye.is_some());
        let sink = Arc::new(Collect::default());
        let shutdown = CancellationToken::new();
        let (mut kubectl, agent_client_side) = duplex(64);
        let (agent_upstream_side, mut apiserver) = duplex(64);
        let task = tokio::spawn(relay_streams(
            agent_client_side,
            agent_upstream_side,
            Some(start(&sink, None)),
            "v5.channel.k8s.io".into(),
            "r1".into(),
            shutdown.clone(),
            goodbye,
        ));
        // A binary stdout frame of 130 bytes (16-bit length); only its start is sent.
        let mut frame = vec![0x82, 126, 0, 130, 1];
        frame.extend_from_slice(&[b'x'; 129]);
        apiserver.write_all(&frame[..20]).await?;
        let mut got = vec![0u8; 20];
        bounded(kubectl.read_exact(&mut got)).await?;
        shutdown.cancel();
        // The rest of the frame arrives after the shutdown and is still relayed.
        apiserver.write_all(&frame[20..]).await?;
        let reader = tokio::spawn(async move {
            let mut rest = Vec::new();
            kubectl.read_to_end(&mut rest).await?;
            // kubectl answers the close by closing its side.
            drop(kubectl);
            Ok::<_, std::io::Error>(rest)
        });
        let rest = bounded(reader).await??;
        assert_eq!(
            rest[..frame.len() - 20],
            frame[20..],
            "frame in flight completed"
        );
        let goodbye = &rest[frame.len() - 20..];
        assert_eq!(goodbye[0], 0x82, "a final binary frame");
        // The Status is longer than 125 bytes: a 16-bit length follows.
        assert_eq!(goodbye[1], 126);
        let len = usize::from(u16::from_be_bytes([goodbye[2], goodbye[3]]));
        assert_eq!(goodbye[4], 3, "on the error channel");
        let status: serde_json::Value = serde_json::from_slice(&goodbye[5..4 + len])?;
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["message"], goodbye::SHUTDOWN_MESSAGE);
        assert_eq!(goodbye[4 + len], 0x88, "then a close frame");
        assert_eq!(bounded(task).await?, "agent_shutdown");
        let events = sink.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].end_reason, "agent_shutdown");
        assert_eq!(
            events[0].bytes_to_client,
            frame.len() as u64,
            "upstream bytes only"
        );
        Ok(())
    }

    #[tokio::test]
    async fn drain_with_no_sessions_returns_at_once() {
        assert_eq!(
            bounded(Sessions::new().drain(Duration::from_secs(3600))).await,
            0
        );
    }

    #[test]
    fn upgrade_failure_still_emits_one_event() {
        let sink = Arc::new(Collect::default());
        upgrade_failed(
            Some(start(&sink, None)),
            "SPDY/3.1".into(),
            "r9".into(),
            "reset",
        );
        let events = sink.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].end_reason, "upgrade_failed: reset");
        assert_eq!(events[0].protocol, "SPDY/3.1");
        assert_eq!(events[0].request_id, "r9");
    }

    #[test]
    fn a_dropped_relay_still_emits_one_event() {
        let sink = Arc::new(Collect::default());
        drop(EndGuard::new(
            Some(start(&sink, None)),
            String::new(),
            "r".into(),
        ));
        let events = sink.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].end_reason, "aborted");
    }

    #[test]
    fn protocol_from_websocket_or_spdy_headers() -> anyhow::Result<()> {
        let mut ws = HeaderMap::new();
        ws.insert("sec-websocket-protocol", "v5.channel.k8s.io".parse()?);
        assert_eq!(negotiated_protocol(&ws), "v5.channel.k8s.io");
        let mut spdy = HeaderMap::new();
        spdy.insert("x-stream-protocol-version", "portforward.k8s.io".parse()?);
        assert_eq!(negotiated_protocol(&spdy), "portforward.k8s.io");
        assert_eq!(negotiated_protocol(&HeaderMap::new()), "");
        Ok(())
    }
}
