//! The durable spool on its own: append and replay across reopen, the ack cursor and
//! segment deletion, torn and corrupt records, and the size bound.

use gatehouse_agent::audit::sink::AuditSink;
use gatehouse_agent::spool::metrics::DropReason;
use gatehouse_agent::spool::record::scan;
use gatehouse_agent::spool::{FullPolicy, Spool, SpoolConfig, SpoolMetrics, segment};
use gatehouse_common::audit::{ApiRequestEvent, AuditEvent};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn event(i: usize) -> AuditEvent {
    AuditEvent::ApiRequest(ApiRequestEvent {
        event_id: format!("ev-{i:06}"),
        path: format!("/api/v1/namespaces/dev/pods/p{i}"),
        ..ApiRequestEvent::default()
    })
}

fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        fsync_interval: Duration::from_millis(5),
        ..SpoolConfig::new(dir)
    }
}

fn open(
    config: SpoolConfig,
) -> Result<(Arc<Spool>, SpoolMetrics), gatehouse_agent::spool::SpoolError> {
    let metrics = SpoolMetrics::default();
    Ok((Spool::open(config, metrics.clone())?, metrics))
}

fn emit_range(spool: &Spool, range: std::ops::Range<usize>) {
    for i in range {
        spool.emit(&event(i));
    }
}

/// Every event id the spool still holds from its cursor on.
fn read_all(spool: &Spool) -> std::io::Result<Vec<String>> {
    let mut reader = spool.reader();
    let mut ids = Vec::new();
    loop {
        let batch = reader.read_batch(100, 1 << 20)?;
        if batch.records == 0 {
            return Ok(ids);
        }
        ids.extend(batch.events.iter().map(|e| e.event_id().to_string()));
    }
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| event(i).event_id().to_string()).collect()
}

#[test]
fn events_survive_a_reopen_in_order() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (spool, _) = open(config(dir.path()))?;
    emit_range(&spool, 0..300);
    assert!(spool.flush(Duration::from_secs(10)));
    assert_eq!(read_all(&spool)?, ids(0..300));
    drop(spool);

    let (spool, metrics) = open(config(dir.path()))?;
    assert_eq!(spool.pending(), 300);
    assert_eq!(read_all(&spool)?, ids(0..300));
    emit_range(&spool, 300..310);
    assert!(spool.flush(Duration::from_secs(10)));
    assert_eq!(read_all(&spool)?, ids(0..310));
    assert_eq!(metrics.corrupt.get(), 0);
    Ok(())
}

#[test]
fn close_makes_queued_events_durable() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    // No timer fsync in the test's lifetime: only close's final fsync can save them.
    cfg.fsync_interval = Duration::from_secs(3600);
    cfg.fsync_every = 1_000_000;
    let (spool, _) = open(cfg.clone())?;
    emit_range(&spool, 0..50);
    spool.close();
    drop(spool);
    let (spool, _) = open(cfg)?;
    assert_eq!(read_all(&spool)?, ids(0..50));
    Ok(())
}

#[test]
fn acked_records_are_not_replayed_and_their_segments_go() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 2048; // several records per segment, many segments
    let (spool, _) = open(cfg.clone())?;
    emit_range(&spool, 0..200);
    assert!(spool.flush(Duration::from_secs(10)));
    let segments_before = segment::list(dir.path())?.len();
    assert!(segments_before > 5, "only {segments_before} segments");

    // Ack the first 120, in batches as the shipper would.
    let mut reader = spool.reader();
    let mut acked = 0;
    while acked < 120 {
        let batch = reader.read_batch(40, 1 << 20)?;
        assert_eq!(batch.events.len(), 40);
        spool.ack(batch.end, batch.records)?;
        acked += 40;
    }
    assert_eq!(spool.pending(), 80);
    let segments_after = segment::list(dir.path())?.len();
    assert!(
        segments_after < segments_before,
        "acked segments must be deleted"
    );
    // Unacked data is never deleted: the rest is all still readable.
    assert_eq!(read_all(&spool)?, ids(120..200));
    drop(spool);

    let (spool, _) = open(cfg.clone())?;
    assert_eq!(spool.pending(), 80);
    assert_eq!(read_all(&spool)?, ids(120..200));
    let mut reader = spool.reader();
    let batch = reader.read_batch(1000, 1 << 20)?;
    spool.ack(batch.end, batch.records)?;
    assert_eq!(spool.pending(), 0);
    drop(spool);
    let (spool, _) = open(cfg)?;
    assert!(read_all(&spool)?.is_empty());
    assert_eq!(spool.pending(), 0);
    Ok(())
}

/// The only segment file that holds records.
fn data_segment(
    dir: &Path,
) -> Result<std::path::PathBuf, Box<dyn std::error::Error + Send + Sync>> {
    for id in segment::list(dir)? {
        let path = segment::path(dir, id);
        if std::fs::metadata(&path)?.len() > 0 {
            return Ok(path);
        }
    }
    Err("no segment with data".into())
}

#[test]
fn a_torn_last_record_is_skipped_at_every_byte_offset() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (spool, _) = open(config(dir.path()))?;
    emit_range(&spool, 0..3);
    spool.close();
    drop(spool);
    let seg = data_segment(dir.path())?;
    let full = std::fs::read(&seg)?;
    let whole = scan(&mut full.as_slice(), 0)?;
    assert_eq!(whole.records_from, 3);
    // Where each record starts (walk the length prefixes).
    let mut starts = Vec::new();
    let mut off = 0usize;
    while off < full.len() {
        starts.push(off);
        let len = u32::from_le_bytes([full[off], full[off + 1], full[off + 2], full[off + 3]]);
        off += 8 + len as usize;
    }
    let last = starts[2];

    for cut in last + 1..full.len() {
        let case = tempfile::tempdir()?;
        let name = seg.file_name().ok_or("no name")?;
        std::fs::write(case.path().join(name), &full[..cut])?;
        let (spool, metrics) = open(config(case.path()))?;
        assert_eq!(read_all(&spool)?, ids(0..2), "cut at {cut}");
        assert_eq!(metrics.corrupt.get(), 1, "cut at {cut}");
        assert_eq!(spool.pending(), 2);
        // The spool goes on: new events land after the good ones.
        emit_range(&spool, 10..12);
        assert!(spool.flush(Duration::from_secs(10)));
        let mut want = ids(0..2);
        want.extend(ids(10..12));
        assert_eq!(read_all(&spool)?, want, "cut at {cut}");
    }
    // A cut exactly at a record boundary is a clean end, not corruption.
    let case = tempfile::tempdir()?;
    std::fs::write(
        case.path().join(seg.file_name().ok_or("no name")?),
        &full[..last],
    )?;
    let (spool, metrics) = open(config(case.path()))?;
    assert_eq!(read_all(&spool)?, ids(0..2));
    assert_eq!(metrics.corrupt.get(), 0);
    Ok(())
}

#[test]
fn a_flipped_byte_mid_segment_keeps_the_good_prefix() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (spool, _) = open(config(dir.path()))?;
    emit_range(&spool, 0..5);
    spool.close();
    drop(spool);
    let seg = data_segment(dir.path())?;
    let mut bytes = std::fs::read(&seg)?;
    let len0 = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let rec = 8 + len0; // all five events serialise to the same length
    let middle = 2 * rec + 8 + len0 / 2; // inside the third record's payload
    bytes[middle] ^= 0x20;
    std::fs::write(&seg, &bytes)?;

    let (spool, metrics) = open(config(dir.path()))?;
    assert_eq!(read_all(&spool)?, ids(0..2));
    assert_eq!(metrics.corrupt.get(), 1);
    emit_range(&spool, 7..8);
    assert!(spool.flush(Duration::from_secs(10)));
    let mut want = ids(0..2);
    want.extend(ids(7..8));
    assert_eq!(read_all(&spool)?, want);
    // Acking past the corrupt segment deletes it, bad tail and all.
    let mut reader = spool.reader();
    let batch = reader.read_batch(100, 1 << 20)?;
    spool.ack(batch.end, batch.records)?;
    assert!(!seg.exists(), "corrupt segment is deleted once acked past");
    Ok(())
}

#[test]
fn garbage_files_and_a_garbage_cursor_never_crash_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    std::fs::write(segment::path(dir.path(), 5), [0xffu8; 100])?;
    std::fs::write(dir.path().join("README"), "not a segment")?;
    let (spool, metrics) = open(config(dir.path()))?;
    assert!(read_all(&spool)?.is_empty());
    assert_eq!(metrics.corrupt.get(), 1);
    emit_range(&spool, 0..1);
    assert!(spool.flush(Duration::from_secs(10)));
    assert_eq!(read_all(&spool)?, ids(0..1));
    drop(spool);
    // An unreadable cursor is an error at open (not a guess that could skip events).
    std::fs::write(dir.path().join("cursor.json"), "{{{")?;
    assert!(open(config(dir.path())).is_err());
    Ok(())
}

#[test]
fn a_full_spool_refuses_until_acks_free_space() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.max_bytes = 16 * 1024;
    cfg.segment_bytes = 2048;
    cfg.full_policy = FullPolicy::FailClosed;
    let (spool, metrics) = open(cfg)?;
    assert!(spool.has_room() && spool.accepts_requests());
    emit_range(&spool, 0..400);
    assert!(spool.flush(Duration::from_secs(10)));
    assert!(!spool.has_room(), "400 events do not fit in 16 KiB");
    assert!(!spool.accepts_requests());
    assert!(
        spool.disk_bytes() <= 16 * 1024,
        "bound exceeded: {}",
        spool.disk_bytes()
    );
    let dropped = metrics
        .dropped
        .get_or_create(&DropReason {
            reason: "spool_full".into(),
        })
        .get();
    let kept = read_all(&spool)?;
    assert_eq!(
        kept.len() as u64 + dropped,
        400,
        "every event is kept or counted"
    );
    assert_eq!(kept, ids(0..kept.len()), "the oldest are kept");
    assert_eq!(metrics.full.get(), 1);

    let mut reader = spool.reader();
    let batch = reader.read_batch(10_000, 1 << 20)?;
    spool.ack(batch.end, batch.records)?;
    assert!(spool.has_room(), "acks free the space");
    assert_eq!(metrics.full.get(), 0);
    Ok(())
}

#[test]
fn keep_serving_accepts_requests_while_full() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.max_bytes = 4096;
    cfg.segment_bytes = 1024;
    cfg.full_policy = FullPolicy::KeepServing;
    let (spool, _) = open(cfg)?;
    emit_range(&spool, 0..200);
    assert!(spool.flush(Duration::from_secs(10)));
    assert!(!spool.has_room());
    assert!(spool.accepts_requests());
    Ok(())
}

#[test]
fn one_spool_dir_serves_one_agent_at_a_time() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (spool, _) = open(config(dir.path()))?;
    assert!(
        open(config(dir.path())).is_err(),
        "a second open of a live spool must fail"
    );
    spool.close();
    drop(spool);
    let (_again, _) = open(config(dir.path()))?;
    Ok(())
}

#[test]
fn a_segment_deleted_behind_the_spools_back_is_skipped() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 1024;
    let (spool, metrics) = open(cfg)?;
    emit_range(&spool, 0..40);
    assert!(spool.flush(Duration::from_secs(10)));
    let first = segment::list(dir.path())?[0];
    std::fs::remove_file(segment::path(dir.path(), first))?;
    let left = read_all(&spool)?;
    assert!(!left.is_empty() && left.len() < 40);
    assert_eq!(left.last().map(String::as_str), Some(event(39).event_id()));
    assert_eq!(metrics.corrupt.get(), 1);
    Ok(())
}

#[test]
fn a_cursor_whose_segment_is_gone_does_not_skip_new_records() -> TestResult {
    let dir = tempfile::tempdir()?;
    // A cursor deep into segment 7, and no segment files at all.
    segment::store_cursor(
        dir.path(),
        segment::Pos {
            segment: 7,
            offset: 5000,
        },
    )?;
    let (spool, _) = open(config(dir.path()))?;
    emit_range(&spool, 0..3);
    assert!(spool.flush(Duration::from_secs(10)));
    assert_eq!(read_all(&spool)?, ids(0..3));
    assert!(segment::list(dir.path())?.iter().all(|id| *id > 7));
    Ok(())
}

#[test]
fn an_idle_writer_still_takes_events_and_flushes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (spool, _) = open(config(dir.path()))?;
    emit_range(&spool, 0..1);
    assert!(spool.flush(Duration::from_secs(10)));
    // Long enough for the writer to park (it polls only while busy).
    std::thread::sleep(Duration::from_millis(500));
    emit_range(&spool, 1..2);
    let mut waited = Duration::ZERO;
    while spool.pending() < 2 && waited < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
        waited += Duration::from_millis(10);
    }
    assert_eq!(
        read_all(&spool)?,
        ids(0..2),
        "the timer fsync made it durable"
    );
    Ok(())
}
