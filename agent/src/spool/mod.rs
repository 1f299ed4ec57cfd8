//! The agent's durable audit spool: every event is appended to segment files in
//! `--spool-dir` before the shipper sends it to the collector, and deleted only once the
//! collector acked it.
//!
//! - [`record`]: the record format (length + CRC32 + JSON) and the recovery scan.
//! - [`segment`]: segment file names and the ack cursor file.
//! - [`writer`]: the writer thread (batched fsync, roll, size bound).
//! - [`reader`]: reads durable records from the cursor on, for the shipper.
//! - [`metrics`]: Prometheus metrics, prefix gatehouse_agent_spool.
//!
//! The request path only clones the event into a bounded queue ([`Spool`]'s `emit`), so
//! it never waits for the disk. When the spool is full, [`FullPolicy`] decides: the proxy
//! checks [`Spool::has_room`] and refuses requests (fail closed), or keeps serving while
//! the dropped-events counter climbs.

pub mod metrics;
pub mod reader;
pub mod record;
pub mod segment;
mod writer;

use crate::audit::sink::AuditSink;
use gatehouse_common::audit::AuditEvent;
pub use metrics::SpoolMetrics;
pub use reader::SpoolReader;
pub use segment::Pos;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
pub use writer::DEFAULT_FSYNC_INTERVAL;
use writer::{Msg, Writer};

/// The message of the 503 a fail-closed agent answers while its spool is full.
pub const SPOOL_FULL_MESSAGE: &str =
    "audit spool is full; refusing requests until the collector catches up";

/// What the agent does when the spool cannot take more events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FullPolicy {
    /// Refuse new requests with 503 (and report not ready) until the collector catches up.
    #[default]
    FailClosed,
    /// Keep serving; events are dropped and counted in `spool_dropped_events_total`.
    KeepServing,
}

/// Settings of the spool.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Directory of the segment files and the cursor.
    pub dir: PathBuf,
    /// Bound on the bytes of all segment files.
    pub max_bytes: u64,
    /// A segment is sealed and a new one started past this size.
    pub segment_bytes: u64,
    /// fsync after this many records...
    pub fsync_every: u64,
    /// ...or this long after the first unsynced record, whichever comes first.
    pub fsync_interval: Duration,
    /// Events the queue in front of the writer holds.
    pub queue_capacity: usize,
    /// What happens when full.
    pub full_policy: FullPolicy,
}

impl SpoolConfig {
    /// Defaults for a spool in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_bytes: 1024 * 1024 * 1024,
            segment_bytes: 64 * 1024 * 1024,
            fsync_every: 256,
            fsync_interval: DEFAULT_FSYNC_INTERVAL,
            queue_capacity: 65_536,
            full_policy: FullPolicy::FailClosed,
        }
    }
}

/// Errors opening the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file or the directory could not be used.
    #[error("audit spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// The settings cannot work.
    #[error("audit spool: {0}")]
    Config(String),
}

/// One segment as the spool knows it.
#[derive(Debug, Clone, Default)]
pub(crate) struct SegState {
    /// Bytes of good, fsynced records (readers stop here).
    pub durable_len: u64,
    /// Bytes of the file on disk (counted against the bound until deleted).
    pub file_len: u64,
    /// No more records will be appended.
    pub sealed: bool,
}

/// State shared by the handle, the writer thread and the readers.
pub(crate) struct Inner {
    pub dir: PathBuf,
    pub config: SpoolConfig,
    segments: Mutex<BTreeMap<u64, SegState>>,
    cursor: Mutex<Pos>,
    pub disk_bytes: AtomicU64,
    pub pending: AtomicU64,
    pub queued: AtomicUsize,
    /// Recording bytes (`SessionChunk` data) in the queue: chunks are large, so the
    /// queue's event bound alone does not bound its memory.
    pub queued_payload: AtomicU64,
    full: AtomicBool,
    pub broken: AtomicBool,
    /// Bumped after each fsync, so the shipper wakes up.
    pub durable: tokio::sync::watch::Sender<u64>,
    pub metrics: SpoolMetrics,
    /// Every unacked record at or after this was written by this run: the writer opens a
    /// new segment, so records before it were recovered from an earlier run (which may
    /// have sent them). With nothing recovered pending, the cursor itself.
    pub first_own: Pos,
}

impl Inner {
    pub fn segments_lock(&self) -> MutexGuard<'_, BTreeMap<u64, SegState>> {
        self.segments.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cursor_lock(&self) -> MutexGuard<'_, Pos> {
        self.cursor.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_full(&self, full: bool) {
        if self.full.swap(full, Ordering::Relaxed) != full {
            if full {
                tracing::error!(dir = %self.dir.display(), max_bytes = self.config.max_bytes,
                    policy = ?self.config.full_policy, "audit spool is full");
            } else {
                tracing::info!(dir = %self.dir.display(), "audit spool has room again");
            }
        }
        self.metrics
            .full
            .set(i64::from(full || self.broken.load(Ordering::Relaxed)));
    }

    pub fn publish_bytes(&self) {
        let b = self.disk_bytes.load(Ordering::Relaxed);
        self.metrics.bytes.set(i64::try_from(b).unwrap_or(i64::MAX));
    }

    pub fn publish_pending(&self) {
        let p = self.pending.load(Ordering::Relaxed);
        self.metrics
            .pending
            .set(i64::try_from(p).unwrap_or(i64::MAX));
    }
}

/// The spool: an [`AuditSink`] on the request path, and the source of the shipper.
pub struct Spool {
    inner: Arc<Inner>,
    tx: SyncSender<Msg>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Exclusive lock on `<dir>/lock`: two agents appending to one spool would corrupt it.
    lock: Mutex<Option<fs::File>>,
}

impl Spool {
    /// Opens (or creates) the spool in `config.dir`: recovers what earlier runs left,
    /// skipping torn or corrupt records (logged and counted), and starts the writer on a
    /// fresh segment.
    pub fn open(config: SpoolConfig, metrics: SpoolMetrics) -> Result<Arc<Self>, SpoolError> {
        if config.max_bytes == 0 || config.segment_bytes == 0 || config.queue_capacity == 0 {
            return Err(SpoolError::Config(
                "max bytes, segment bytes and queue capacity must be positive".into(),
            ));
        }
        // Space is freed a whole segment at a time; a segment near the bound would make
        // the spool fill up long before the bytes say so.
        let mut config = config;
        config.segment_bytes = config.segment_bytes.min((config.max_bytes / 4).max(1));
        config.fsync_every = config.fsync_every.max(1);
        let dir = config.dir.clone();
        let io_err = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| SpoolError::Io { path, source }
        };
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let lock_path = dir.join("lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        lock.try_lock().map_err(|e| {
            SpoolError::Config(format!(
                "{} is in use by another process ({e}); each agent needs its own --spool-dir",
                dir.display()
            ))
        })?;
        let recovered = recover(&dir, &metrics).map_err(io_err(&dir))?;
        let (durable, _) = tokio::sync::watch::channel(0u64);
        let inner = Arc::new(Inner {
            dir: dir.clone(),
            config: config.clone(),
            segments: Mutex::new(recovered.segments),
            cursor: Mutex::new(recovered.cursor),
            disk_bytes: AtomicU64::new(recovered.bytes),
            pending: AtomicU64::new(recovered.pending),
            queued: AtomicUsize::new(0),
            queued_payload: AtomicU64::new(0),
            full: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            durable,
            metrics,
            first_own: if recovered.pending == 0 {
                recovered.cursor
            } else {
                Pos {
                    segment: recovered.next_segment,
                    offset: 0,
                }
            },
        });
        inner.publish_bytes();
        inner.publish_pending();
        if recovered.bytes + record::HEADER_BYTES as u64 >= config.max_bytes {
            inner.set_full(true);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(config.queue_capacity);
        let writer = Writer::new(inner.clone(), rx, recovered.next_segment)
            .map_err(io_err(&segment::path(&dir, recovered.next_segment)))?;
        let handle = std::thread::Builder::new()
            .name("gatehouse-spool".into())
            .spawn(move || writer.run())
            .map_err(io_err(&dir))?;
        tracing::info!(dir = %dir.display(), pending = recovered.pending, bytes = recovered.bytes,
            "audit spool opened");
        Ok(Arc::new(Self {
            inner,
            tx,
            writer: Mutex::new(Some(handle)),
            lock: Mutex::new(Some(lock)),
        }))
    }

    /// Whether new events can be recorded: not full, the writer healthy and the queue
    /// not close to overflowing. The fail-closed request path checks this.
    pub fn has_room(&self) -> bool {
        !self.inner.full.load(Ordering::Relaxed)
            && !self.inner.broken.load(Ordering::Relaxed)
            && self.inner.queued.load(Ordering::Relaxed) < self.inner.config.queue_capacity / 4 * 3
    }

    /// Whether the request path may serve: always with keep-serving, only with room
    /// with fail-closed.
    pub fn accepts_requests(&self) -> bool {
        self.inner.config.full_policy == FullPolicy::KeepServing || self.has_room()
    }

    /// A `/readyz` condition: not ready while a fail-closed spool refuses requests, so
    /// traffic moves to other agents.
    pub fn ready_check(spool: Arc<Self>) -> crate::ops::ReadyCheck {
        Box::new(move || {
            let spool = spool.clone();
            Box::pin(async move {
                if spool.accepts_requests() {
                    Ok(())
                } else {
                    Err(SPOOL_FULL_MESSAGE.to_string())
                }
            })
        })
    }

    /// Recording bytes queued for the writer (see [`Inner::queued_payload`]).
    pub fn queued_recording_bytes(&self) -> u64 {
        self.inner.queued_payload.load(Ordering::Relaxed)
    }

    /// The configured full policy.
    pub fn full_policy(&self) -> FullPolicy {
        self.inner.config.full_policy
    }

    /// The spool directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.inner.dir
    }

    /// Records on disk not yet acked.
    pub fn pending(&self) -> u64 {
        self.inner.pending.load(Ordering::Relaxed)
    }

    /// Bytes of segment files on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.inner.disk_bytes.load(Ordering::Relaxed)
    }

    /// The first unacked record.
    pub fn cursor(&self) -> Pos {
        *self.inner.cursor_lock()
    }

    /// A receiver that changes after every fsync (new records to ship).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.durable.subscribe()
    }

    /// Where the records written by this run start; those before were recovered from an
    /// earlier run, which may have sent them (the shipper then never marks them fresh).
    pub fn first_own_position(&self) -> Pos {
        self.inner.first_own
    }

    /// A reader starting at the cursor.
    pub fn reader(&self) -> SpoolReader {
        SpoolReader::new(self.inner.clone(), self.cursor())
    }

    /// Blocks until everything queued so far is durable (bounded by `timeout`).
    /// Returns `false` if the writer did not answer in time or is gone.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        if self.tx.send(Msg::Flush(done_tx)).is_err() {
            return false;
        }
        done_rx.recv_timeout(timeout).is_ok()
    }

    /// Stops the writer after an fsync of everything queued, and waits for it. Later
    /// events are dropped (counted as `stopped`).
    pub fn close(&self) {
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = self.tx.send(Msg::Stop);
            let _ = handle.join();
        }
        // Dropping the file releases the lock for the next open.
        drop(self.lock.lock().unwrap_or_else(|p| p.into_inner()).take());
    }

    /// Records that the collector committed everything before `upto` (`records` of them):
    /// persists the cursor, then deletes the segments wholly before it.
    pub fn ack(&self, upto: Pos, records: u64) -> io::Result<()> {
        {
            let mut cursor = self.inner.cursor_lock();
            if upto <= *cursor {
                return Ok(());
            }
            segment::store_cursor(&self.inner.dir, upto)?;
            *cursor = upto;
        }
        let _ = self
            .inner
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(p.saturating_sub(records))
            });
        self.inner.publish_pending();
        let doomed: Vec<(u64, u64)> = self
            .inner
            .segments_lock()
            .iter()
            .filter(|(id, s)| **id < upto.segment && s.sealed)
            .map(|(id, s)| (*id, s.file_len))
            .collect();
        let mut freed = false;
        for (id, len) in doomed {
            match fs::remove_file(segment::path(&self.inner.dir, id)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            self.inner.segments_lock().remove(&id);
            let _ = self
                .inner
                .disk_bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some(b.saturating_sub(len))
                });
            freed = true;
        }
        if freed {
            segment::sync_dir(&self.inner.dir)?;
            self.inner.publish_bytes();
            // Hysteresis: room again once a whole segment fits.
            let bytes = self.disk_bytes();
            if bytes + self.inner.config.segment_bytes <= self.inner.config.max_bytes {
                self.inner.set_full(false);
            }
        }
        Ok(())
    }
}

/// Recording bytes an event carries (0 for everything but `SessionChunk`).
pub(crate) fn payload_bytes(event: &AuditEvent) -> u64 {
    match event {
        AuditEvent::SessionChunk(c) => c.data.len() as u64,
        _ => 0,
    }
}

impl AuditSink for Spool {
    fn emit(&self, event: &AuditEvent) {
        self.inner.queued.fetch_add(1, Ordering::Relaxed);
        let payload = payload_bytes(event);
        self.inner
            .queued_payload
            .fetch_add(payload, Ordering::Relaxed);
        match self.tx.try_send(Msg::Event(Box::new(event.clone()))) {
            Ok(()) => {}
            Err(err) => {
                self.inner.queued.fetch_sub(1, Ordering::Relaxed);
                self.inner
                    .queued_payload
                    .fetch_sub(payload, Ordering::Relaxed);
                let reason = match err {
                    TrySendError::Full(_) => "queue_full",
                    TrySendError::Disconnected(_) => "stopped",
                };
                self.inner.metrics.drop_event(reason);
                tracing::error!(
                    reason,
                    event_id = event.event_id(),
                    "audit event NOT recorded by the spool"
                );
            }
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.close();
    }
}

/// What [`recover`] found on disk.
struct Recovered {
    segments: BTreeMap<u64, SegState>,
    cursor: Pos,
    bytes: u64,
    pending: u64,
    next_segment: u64,
}

/// Reads what earlier runs left: drops segments before the cursor, scans the rest.
fn recover(dir: &std::path::Path, metrics: &SpoolMetrics) -> io::Result<Recovered> {
    let ids = segment::list(dir)?;
    let stored = segment::load_cursor(dir)?;
    let mut cursor = stored.unwrap_or(Pos {
        segment: ids.first().copied().unwrap_or(1),
        offset: 0,
    });
    let mut segments = BTreeMap::new();
    let (mut bytes, mut pending) = (0u64, 0u64);
    for &id in &ids {
        let path = segment::path(dir, id);
        if id < cursor.segment {
            // Acked by the collector before the last run could delete it.
            fs::remove_file(&path)?;
            continue;
        }
        let file = fs::File::open(&path)?;
        let file_len = file.metadata()?.len();
        let from = if id == cursor.segment {
            cursor.offset
        } else {
            0
        };
        let scan = record::scan(&mut io::BufReader::new(file), from)?;
        if let Some((offset, bad)) = &scan.bad {
            metrics.corrupt.inc();
            tracing::error!(segment = %path.display(), offset, skipped_bytes = file_len - offset,
                reason = %bad, "corrupt audit spool record: keeping the records before it, skipping the rest of the segment");
        }
        if id == cursor.segment && cursor.offset > scan.valid_len {
            tracing::error!(segment = %path.display(), cursor = cursor.offset, valid = scan.valid_len,
                "ack cursor is past the good records of its segment; resuming at the segment's end");
            cursor.offset = scan.valid_len;
        }
        bytes += file_len;
        pending += scan.records_from;
        segments.insert(
            id,
            SegState {
                durable_len: scan.valid_len,
                file_len,
                sealed: true,
            },
        );
    }
    if !segments.contains_key(&cursor.segment) {
        // Its segment is gone (removed by hand): resume at the start of the next one, and
        // never let a new segment take the old id (the offset would skip its records).
        cursor.offset = 0;
    }
    let next_segment = ids
        .last()
        .map_or(1, |last| last + 1)
        .max(cursor.segment + 1);
    Ok(Recovered {
        segments,
        cursor,
        bytes,
        pending,
        next_segment,
    })
}
