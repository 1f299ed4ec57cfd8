//! The ClickHouse audit store against the real server from the launcher: migrations once,
//! rows stored once, a re-sent batch adds nothing, an outage is an error and then recovers.

mod collector_support;

use collector_support::{api_event, count, session_event};
use gatehouse_collector::store::AuditStore;
use gatehouse_collector::store::clickhouse::{ClickHouseConfig, ClickHouseStore};
use gatehouse_tests::clickhouse::ClickHouse;
use std::time::Duration;

fn store(ch: &ClickHouse, db: &str) -> ClickHouseStore {
    let mut config = ClickHouseConfig::new(ch.url(), db);
    config.timeout = Duration::from_secs(20);
    ClickHouseStore::new(config)
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_apply_once_and_batches_are_idempotent() -> anyhow::Result<()> {
    let Some(ch) = ClickHouse::launch()? else {
        return Ok(());
    };
    let first = store(&ch, "audit");
    let report = first.migrate().await?;
    assert_eq!(report.server_version.split('.').next(), Some("18"));
    assert!(!report.features.datetime64);
    assert_eq!(report.applied, vec![1, 2]);

    let batch = vec![api_event(1), api_event(2), session_event(), api_event(3)];
    let out = first.insert(&batch).await?;
    assert_eq!((out.inserted, out.duplicates), (4, 0));
    assert_eq!(count(&ch, "audit", "api_requests")?, 3);
    assert_eq!(count(&ch, "audit", "sessions")?, 1);

    // The same batch again (an agent that never saw the ack), plus one new event.
    let mut again = batch.clone();
    again.push(api_event(4));
    let out = first.insert(&again).await?;
    assert_eq!((out.inserted, out.duplicates), (1, 4));
    assert_eq!(count(&ch, "audit", "api_requests")?, 4);
    assert_eq!(count(&ch, "audit", "sessions")?, 1);

    // Repeats inside one batch are stored once.
    let e = api_event(5);
    let out = first.insert(&[e.clone(), e]).await?;
    assert_eq!((out.inserted, out.duplicates), (1, 1));
    assert_eq!(count(&ch, "audit", "api_requests")?, 5);

    // Values survive the round trip (quotes and backslashes included).
    let groups = ch.query("SELECT DISTINCT groups FROM audit.api_requests")?;
    assert_eq!(groups.trim(), r"['dev','o\'brien \\ \'quoted\'']");
    let cmd = ch.query("SELECT exec_command, exec_tty, kind FROM audit.sessions")?;
    assert_eq!(cmd.trim(), "['sh','-c','echo hi']\t1\texec");

    // A collector restart: the schema is current, nothing is applied.
    let second = store(&ch, "audit");
    assert_eq!(second.migrate().await?.applied, Vec::<u32>::new());
    let versions = ch.query("SELECT count() FROM audit.schema_migrations")?;
    assert_eq!(versions.trim(), "2");
    Ok(())
}

/// Migration 2's session fields and the recording chunks round-trip through ClickHouse.
#[tokio::test(flavor = "multi_thread")]
async fn session_recording_fields_and_chunks_round_trip() -> anyhow::Result<()> {
    use gatehouse_collector::store::query::AuditQuery;
    use gatehouse_common::audit::{AuditEvent, PortForwardStats, SessionChunkEvent};
    let Some(ch) = ClickHouse::launch()? else {
        return Ok(());
    };
    let store = store(&ch, "rec");
    store.migrate().await?;
    let AuditEvent::SessionEnd(mut end) = session_event() else {
        anyhow::bail!("session_event is not a session end");
    };
    end.exit_code = Some(3);
    end.duration_ms = 5000.0;
    end.terminal = "120x40".into();
    end.stdin_bytes = 7;
    end.output_bytes = 9;
    end.recording_chunks = 3;
    end.ports = vec![PortForwardStats {
        port: 8080,
        connections: 2,
        bytes_from_client: 10,
        bytes_to_client: 20,
    }];
    let id = end.session_id.clone();
    let chunk = |seq: u64, data: &str| {
        AuditEvent::SessionChunk(SessionChunkEvent {
            event_id: uuid::Uuid::new_v4().to_string(),
            session_id: id.clone(),
            time: end.started,
            seq,
            stream: if seq == 0 { "header" } else { "events" }.into(),
            data: data.into(),
            ..SessionChunkEvent::default()
        })
    };
    let batch = vec![
        AuditEvent::SessionEnd(end.clone()),
        chunk(1, "[0.1,\"o\",\"\\u001b[1mhi\"]\n"),
        chunk(0, "{\"version\":2}\n"),
    ];
    let out = store.insert(&batch).await?;
    assert_eq!((out.inserted, out.duplicates), (3, 0));
    assert_eq!(store.insert(&batch).await?.duplicates, 3);
    let detail = store
        .session(&id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("session not found"))?;
    // 18.16 keeps whole seconds.
    end.started = detail.session.started;
    end.ended = detail.session.ended;
    end.groups = detail.session.groups.clone();
    assert_eq!(detail.session, end);
    let chunks = store.session_chunks(&id).await?;
    let seqs: Vec<u64> = chunks.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, vec![0, 1]);
    assert_eq!(chunks[1].data, "[0.1,\"o\",\"\\u001b[1mhi\"]\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn outage_is_an_error_then_the_store_recovers() -> anyhow::Result<()> {
    let Some(mut ch) = ClickHouse::launch()? else {
        return Ok(());
    };
    let s = store(&ch, "audit");
    s.migrate().await?;
    ch.stop();
    let batch = vec![api_event(1), api_event(2)];
    assert!(s.insert(&batch).await.is_err());
    assert!(s.health().await.is_err());
    ch.start()?;
    s.health().await?;
    let out = s.insert(&batch).await?;
    assert_eq!(out.inserted, 2);
    assert_eq!(count(&ch, "audit", "api_requests")?, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn store_started_while_clickhouse_is_down_connects_later() -> anyhow::Result<()> {
    let Some(mut ch) = ClickHouse::launch()? else {
        return Ok(());
    };
    ch.stop();
    let s = store(&ch, "later");
    assert!(s.insert(&[api_event(1)]).await.is_err());
    ch.start()?;
    assert_eq!(s.insert(&[api_event(1)]).await?.inserted, 1);
    assert_eq!(s.migrate().await?.applied, vec![1, 2]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn large_batches_are_checked_in_chunks_and_stay_exact() -> anyhow::Result<()> {
    let Some(ch) = ClickHouse::launch()? else {
        return Ok(());
    };
    let s = store(&ch, "audit");
    s.migrate().await?;
    // 10,000 UUIDs are ~390 KB of ids: over ClickHouse's 256 KiB max_query_size in one query.
    let batch: Vec<_> = (0..10_000u32).map(api_event).collect();
    let started = std::time::Instant::now();
    assert_eq!(s.insert(&batch).await?.inserted, 10_000);
    let first = started.elapsed();
    let started = std::time::Instant::now();
    let again = s.insert(&batch).await?;
    let resend = started.elapsed();
    assert_eq!((again.inserted, again.duplicates), (0, 10_000));
    assert_eq!(count(&ch, "audit", "api_requests")?, 10_000);
    // A measurement for the report, not an assertion.
    eprintln!("10k-event batch: first insert {first:?}, re-sent {resend:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_resends_of_one_batch_store_it_once() -> anyhow::Result<()> {
    let Some(ch) = ClickHouse::launch()? else {
        return Ok(());
    };
    let s = std::sync::Arc::new(store(&ch, "audit"));
    s.migrate().await?;
    let batch: std::sync::Arc<Vec<_>> = std::sync::Arc::new((0..200u32).map(api_event).collect());
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (s, batch) = (s.clone(), batch.clone());
        tasks.push(tokio::spawn(async move { s.insert(&batch).await }));
    }
    let mut inserted = 0;
    for t in tasks {
        inserted += t.await??.inserted;
    }
    assert_eq!(inserted, 200);
    assert_eq!(count(&ch, "audit", "api_requests")?, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_batch_is_stored_without_the_lookup_and_its_resend_adds_nothing()
-> anyhow::Result<()> {
    let Some(ch) = ClickHouse::launch()? else {
        return Ok(());
    };
    let s = store(&ch, "audit");
    let batch = vec![api_event(1), session_event(), api_event(2)];
    // Repeats inside a fresh batch are still stored once.
    let mut fresh = batch.clone();
    fresh.push(batch[0].clone());
    let out = s.insert_fresh(&fresh).await?;
    assert_eq!((out.inserted, out.duplicates), (3, 1));
    assert_eq!(count(&ch, "audit", "api_requests")?, 2);
    assert_eq!(count(&ch, "audit", "sessions")?, 1);
    // The agent never saw the ack and re-sends: a re-send is never fresh, so it is checked.
    let out = s.insert(&batch).await?;
    assert_eq!((out.inserted, out.duplicates), (0, 3));
    assert_eq!(count(&ch, "audit", "api_requests")?, 2);
    assert_eq!(count(&ch, "audit", "sessions")?, 1);
    Ok(())
}
