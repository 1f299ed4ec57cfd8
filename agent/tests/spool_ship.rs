//! The shipper against an in-test ingest endpoint: everything arrives and the spool
//! empties; a collector killed and restarted mid-stream, refused batches, a stalled
//! collector and a reopened spool lose nothing, and no event is deleted before its ack.

#[path = "spool_support/ingest.rs"]
mod ingest;

use gatehouse_agent::audit::sink::AuditSink;
use gatehouse_agent::ship::{ShipConfig, ShipMetrics, Shipper};
use gatehouse_agent::spool::{Spool, SpoolConfig, SpoolMetrics};
use gatehouse_common::audit::{ApiRequestEvent, AuditEvent};
use ingest::{IngestServer, Mode};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
/// Bound of every wait in these tests (generous: the machine is shared).
const LIMIT: Duration = Duration::from_secs(30);

fn event(i: usize) -> AuditEvent {
    AuditEvent::ApiRequest(ApiRequestEvent {
        event_id: format!("ship-{i:06}"),
        path: format!("/api/v1/namespaces/dev/pods/p{i}"),
        ..ApiRequestEvent::default()
    })
}

fn spool_config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        fsync_interval: Duration::from_millis(5),
        segment_bytes: 8 * 1024,
        ..SpoolConfig::new(dir)
    }
}

fn open_spool(dir: &Path) -> Result<Arc<Spool>, gatehouse_agent::spool::SpoolError> {
    Spool::open(spool_config(dir), SpoolMetrics::default())
}

fn ship_config(server: &IngestServer, ca: &Path) -> ShipConfig {
    ShipConfig {
        ca_file: Some(ca.to_path_buf()),
        batch_max_events: 50,
        window: 4,
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ack_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
        ..ShipConfig::new(server.url(), "node-a")
    }
}

fn emit(spool: &Spool, range: std::ops::Range<usize>) {
    for i in range {
        spool.emit(&event(i));
    }
}

async fn wait_for(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

fn all_arrived(server: &IngestServer, range: std::ops::Range<usize>) -> bool {
    range.clone().all(|i| server.has(event(i).event_id()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_and_the_spool_empties() -> TestResult {
    let dir = tempfile::tempdir()?;
    let tls = ingest::tls(dir.path())?;
    let server = IngestServer::start(tls.server.clone(), None).await?;
    let spool = open_spool(&dir.path().join("spool"))?;
    let metrics = ShipMetrics::default();
    let stop = CancellationToken::new();
    let task = Shipper::new(
        spool.clone(),
        ship_config(&server, &tls.ca_file),
        metrics.clone(),
    )?
    .spawn(stop.clone());
    emit(&spool, 0..1000);
    assert!(spool.flush(Duration::from_secs(10)));
    assert!(
        server.wait(LIMIT, |s| s.committed() == 1000).await,
        "only {}",
        server.committed()
    );
    assert!(all_arrived(&server, 0..1000));
    assert!(
        wait_for(LIMIT, || spool.pending() == 0).await,
        "pending {}",
        spool.pending()
    );
    assert!(
        wait_for(LIMIT, || metrics.acked.get() == 1000).await,
        "acked {}",
        metrics.acked.get()
    );
    // Fully acked segments are gone: what is left is at most the active one.
    let left = gatehouse_agent::spool::segment::list(spool.dir())?;
    assert!(left.len() <= 2, "segments left: {left:?}");
    assert_eq!(metrics.reconnects.get(), 0);
    assert_eq!(server.state.seq_violations.load(Ordering::Relaxed), 0);
    // Nothing was ever re-sent: every batch is fresh (the collector skips its id lookup).
    assert_eq!(
        server.state.fresh_batches.load(Ordering::Relaxed),
        server.state.batches.load(Ordering::Relaxed)
    );
    assert_eq!(server.state.fresh_repeats.load(Ordering::Relaxed), 0);
    let agents = server
        .state
        .agents
        .lock()
        .map(|a| a.clone())
        .unwrap_or_default();
    assert_eq!(
        agents.into_iter().collect::<Vec<_>>(),
        vec!["node-a".to_string()]
    );
    stop.cancel();
    task.await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_killed_and_restarted_mid_stream_loses_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let tls = ingest::tls(dir.path())?;
    let server = IngestServer::start(tls.server.clone(), None).await?;
    let spool = open_spool(&dir.path().join("spool"))?;
    let metrics = ShipMetrics::default();
    let stop = CancellationToken::new();
    let task = Shipper::new(
        spool.clone(),
        ship_config(&server, &tls.ca_file),
        metrics.clone(),
    )?
    .spawn(stop.clone());
    emit(&spool, 0..500);
    assert!(spool.flush(Duration::from_secs(10)));
    assert!(server.wait(LIMIT, |s| s.committed() >= 100).await);
    server.stop();
    emit(&spool, 500..1000);
    assert!(spool.flush(Duration::from_secs(10)));
    // While the collector is down nothing unacked may go.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let acked_so_far = metrics.acked.get();
    assert!(
        spool.pending() >= 1000 - acked_so_far,
        "pending {} acked {acked_so_far}",
        spool.pending()
    );
    server.restart().await?;
    assert!(
        server.wait(LIMIT, |s| all_arrived(s, 0..1000)).await,
        "only {}",
        server.committed()
    );
    assert!(
        wait_for(LIMIT, || spool.pending() == 0).await,
        "pending {}",
        spool.pending()
    );
    assert!(metrics.reconnects.get() >= 1);
    assert!(server.state.streams.load(Ordering::Relaxed) >= 2);
    // Batches re-sent after the restart are not fresh; no fresh batch repeats an event.
    assert_eq!(server.state.fresh_repeats.load(Ordering::Relaxed), 0);
    // seq restarts from 1 on each new stream.
    assert_eq!(server.state.seq_violations.load(Ordering::Relaxed), 0);
    stop.cancel();
    task.await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_batches_are_kept_and_retried() -> TestResult {
    let dir = tempfile::tempdir()?;
    let tls = ingest::tls(dir.path())?;
    let server = IngestServer::start(tls.server.clone(), None).await?;
    server.set_mode(Mode::Refuse);
    let spool = open_spool(&dir.path().join("spool"))?;
    let stop = CancellationToken::new();
    let metrics = ShipMetrics::default();
    let task = Shipper::new(
        spool.clone(),
        ship_config(&server, &tls.ca_file),
        metrics.clone(),
    )?
    .spawn(stop.clone());
    emit(&spool, 0..120);
    assert!(spool.flush(Duration::from_secs(10)));
    assert!(
        server
            .wait(LIMIT, |s| s.state.refused.load(Ordering::Relaxed) >= 3)
            .await
    );
    assert_eq!(spool.pending(), 120, "a refused batch must not be deleted");
    assert_eq!(metrics.acked.get(), 0);
    server.set_mode(Mode::Ack);
    assert!(
        server.wait(LIMIT, |s| all_arrived(s, 0..120)).await,
        "only {}",
        server.committed()
    );
    assert!(wait_for(LIMIT, || spool.pending() == 0).await);
    assert!(metrics.reconnects.get() >= 1);
    // Re-sends of refused batches are never marked fresh.
    assert_eq!(server.state.fresh_repeats.load(Ordering::Relaxed), 0);
    stop.cancel();
    task.await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_collector_deletes_nothing_and_is_reconnected() -> TestResult {
    let dir = tempfile::tempdir()?;
    let tls = ingest::tls(dir.path())?;
    let server = IngestServer::start(tls.server.clone(), None).await?;
    server.set_mode(Mode::Stall);
    let spool_dir = dir.path().join("spool");
    let spool = open_spool(&spool_dir)?;
    let stop = CancellationToken::new();
    let mut config = ship_config(&server, &tls.ca_file);
    config.ack_timeout = Duration::from_millis(500);
    let metrics = ShipMetrics::default();
    let task = Shipper::new(spool.clone(), config, metrics.clone())?.spawn(stop.clone());
    emit(&spool, 0..300);
    assert!(spool.flush(Duration::from_secs(10)));
    // The whole window is in flight and unacked...
    assert!(
        server
            .wait(LIMIT, |s| s.state.batches.load(Ordering::Relaxed) >= 4)
            .await
    );
    assert_eq!(spool.pending(), 300);
    // ...and is still on disk: a second reader sees every event.
    let mut reader = spool.reader();
    let batch = reader.read_batch(10_000, 64 << 20)?;
    assert_eq!(batch.events.len(), 300);
    // The ack timeout ends the stalled stream; once acks flow all arrive.
    assert!(wait_for(LIMIT, || metrics.reconnects.get() >= 1).await);
    server.set_mode(Mode::Ack);
    assert!(
        server.wait(LIMIT, |s| all_arrived(s, 0..300)).await,
        "only {}",
        server.committed()
    );
    assert!(wait_for(LIMIT, || spool.pending() == 0).await);
    stop.cancel();
    task.await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_reopened_mid_way_loses_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let tls = ingest::tls(dir.path())?;
    let server = IngestServer::start(tls.server.clone(), None).await?;
    let spool_dir = dir.path().join("spool");
    let spool = open_spool(&spool_dir)?;
    let stop = CancellationToken::new();
    let task = Shipper::new(
        spool.clone(),
        ship_config(&server, &tls.ca_file),
        ShipMetrics::default(),
    )?
    .spawn(stop.clone());
    emit(&spool, 0..400);
    assert!(spool.flush(Duration::from_secs(10)));
    assert!(server.wait(LIMIT, |s| s.committed() >= 50).await);
    // Agent restart: the shipper stops mid-stream, the spool closes.
    stop.cancel();
    task.await?;
    spool.close();
    drop(spool);

    let spool = open_spool(&spool_dir)?;
    emit(&spool, 400..600);
    assert!(spool.flush(Duration::from_secs(10)));
    let stop = CancellationToken::new();
    let task = Shipper::new(
        spool.clone(),
        ship_config(&server, &tls.ca_file),
        ShipMetrics::default(),
    )?
    .spawn(stop.clone());
    assert!(
        server.wait(LIMIT, |s| all_arrived(s, 0..600)).await,
        "only {}",
        server.committed()
    );
    assert!(
        wait_for(LIMIT, || spool.pending() == 0).await,
        "pending {}",
        spool.pending()
    );
    // What the first run may have sent is never marked fresh by the second.
    assert_eq!(server.state.fresh_repeats.load(Ordering::Relaxed), 0);
    stop.cancel();
    task.await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_retried_and_a_rotated_one_is_picked_up() -> TestResult {
    let dir = tempfile::tempdir()?;
    let tls = ingest::tls(dir.path())?;
    let server = IngestServer::start(tls.server.clone(), Some("good-token")).await?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "stale\n")?;
    let spool = open_spool(&dir.path().join("spool"))?;
    let mut config = ship_config(&server, &tls.ca_file);
    config.token_file = Some(token_file.clone());
    let stop = CancellationToken::new();
    let task = Shipper::new(spool.clone(), config, ShipMetrics::default())?.spawn(stop.clone());
    emit(&spool, 0..10);
    assert!(spool.flush(Duration::from_secs(10)));
    assert!(
        server
            .wait(LIMIT, |s| s.state.unauthorized.load(Ordering::Relaxed) >= 2)
            .await
    );
    assert_eq!(server.committed(), 0);
    assert_eq!(spool.pending(), 10);
    std::fs::write(&token_file, "good-token")?;
    assert!(server.wait(LIMIT, |s| all_arrived(s, 0..10)).await);
    assert!(wait_for(LIMIT, || spool.pending() == 0).await);
    stop.cancel();
    task.await?;
    Ok(())
}

#[tokio::test]
async fn an_untrusted_collector_certificate_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let tls = ingest::tls(dir.path())?;
    let other = tempfile::tempdir()?;
    let wrong_ca = ingest::tls(other.path())?.ca_file;
    let server = IngestServer::start(tls.server.clone(), None).await?;
    let spool = open_spool(&dir.path().join("spool"))?;
    let metrics = ShipMetrics::default();
    let stop = CancellationToken::new();
    let task = Shipper::new(
        spool.clone(),
        ship_config(&server, &wrong_ca),
        metrics.clone(),
    )?
    .spawn(stop.clone());
    emit(&spool, 0..5);
    assert!(spool.flush(Duration::from_secs(10)));
    assert!(wait_for(LIMIT, || metrics.reconnects.get() >= 2).await);
    assert_eq!(server.state.streams.load(Ordering::Relaxed), 0);
    assert_eq!(spool.pending(), 5);
    stop.cancel();
    task.await?;
    Ok(())
}
