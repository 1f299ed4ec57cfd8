//! The real `gatehouse-collector` binary with the embedded store (`--store-dir`, no
//! ClickHouse): batches shipped over the real ingest endpoint (mTLS, HTTP/2) are stored
//! exactly once across a re-sent batch and across a SIGKILL and restart, and the rows are
//! read back from the SQLite file through the store's query contract. The same with the
//! real agent's spool + shipper, and `dev-stack --clickhouse off` (what `cargo xtask dev
//! --clickhouse off` runs) end to end.
//!
//! Needs the binaries: `cargo build -p gatehouse-agent -p gatehouse-collector --bins`.

mod collector_support;

use collector_support::{
    Collector, IngestClient, Pki, api_event, batch, client_tls, session_event,
};
use gatehouse_collector::store::embedded::{EmbeddedStore, FILE_NAME};
use gatehouse_collector::store::query::{AuditQuery, PageRequest, RequestFilter, SessionFilter};
use gatehouse_common::audit::AuditEvent;
use gatehouse_common::ingest::Ack;
use gatehouse_tests::harness::ports::free_loopback_addr;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

async fn agent_client(pki: &Pki, collector: &Collector) -> anyhow::Result<IngestClient> {
    let cert = pki.agent("node-a")?;
    IngestClient::connect(
        collector.ingest,
        client_tls(&pki.server_ca.cert_pem(), Some(&cert))?,
    )
    .await
}

/// Every stored API request and session event id with how often it is stored, read from
/// the file by a second connection (WAL lets it read beside the running collector).
async fn stored(dir: &Path) -> anyhow::Result<HashMap<String, u32>> {
    let (store, _) = EmbeddedStore::open(dir, Duration::from_secs(10))?;
    let mut counts = HashMap::new();
    let mut page = PageRequest {
        limit: 1000,
        after: None,
    };
    loop {
        let got = store.requests(&RequestFilter::default(), &page).await?;
        for e in got.items {
            *counts.entry(e.event_id).or_insert(0) += 1;
        }
        match got.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    let sessions = store
        .sessions(&SessionFilter::default(), &PageRequest::default())
        .await?;
    for s in sessions.items {
        *counts.entry(s.event_id).or_insert(0) += 1;
    }
    Ok(counts)
}

fn ids(events: &[AuditEvent]) -> Vec<String> {
    events.iter().map(|e| e.event_id().to_string()).collect()
}

async fn ack(stream: &mut collector_support::IngestStream) -> anyhow::Result<Ack> {
    stream
        .next_ack()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no ack"))
}

#[tokio::test(flavor = "multi_thread")]
async fn resent_batches_add_no_rows_and_a_killed_collector_loses_nothing() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let data = tempfile::tempdir()?;
    let store_dir = data.path().join("audit");
    let ingest = free_loopback_addr()?;
    let collector = Collector::start_embedded(&pki, &store_dir, ingest).await?;
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&store_dir)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "store dir mode {mode:o}");
    }
    assert!(store_dir.join(FILE_NAME).is_file());

    // 1. Two batches, acked with what was new.
    let first: Vec<AuditEvent> = vec![api_event(1), api_event(2), session_event(), api_event(3)];
    let mut client = agent_client(&pki, &collector).await?;
    let mut stream = client.open().await?;
    assert_eq!(stream.status, 200);
    stream.send(&batch("node-a", 1, &first[..2])).await?;
    stream.send(&batch("node-a", 2, &first[2..])).await?;
    let (a, b) = (ack(&mut stream).await?, ack(&mut stream).await?);
    assert_eq!((a.seq, a.committed, a.inserted), (1, true, 2), "{a:?}");
    assert_eq!((b.seq, b.committed, b.inserted), (2, true, 2), "{b:?}");

    // 2. A reconnecting agent re-sends everything (plus an id repeated in the batch).
    let mut resend = first.clone();
    resend.push(first[0].clone());
    let mut client = agent_client(&pki, &collector).await?;
    let mut stream = client.open().await?;
    stream.send(&batch("node-a", 1, &resend)).await?;
    let again = ack(&mut stream).await?;
    assert_eq!((again.committed, again.inserted), (true, 0), "{again:?}");
    let counts = stored(&store_dir).await?;
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");

    // 3. Mid-run SIGKILL: batches in flight, one acked before the kill at most. The agent
    // keeps whatever it did not see acked and re-sends it to the restarted collector.
    let second: Vec<AuditEvent> = (10..40).map(api_event).collect();
    let mut stream = client.open().await?;
    stream.send(&batch("node-a", 1, &second[..10])).await?;
    let acked = ack(&mut stream).await?;
    assert!(acked.committed, "{acked:?}");
    stream.send(&batch("node-a", 2, &second[10..20])).await?;
    stream.send(&batch("node-a", 3, &second[20..])).await?;
    collector.kill().await?;
    drop(stream);
    drop(client);

    let collector = Collector::start_embedded(&pki, &store_dir, ingest).await?;
    let mut client = agent_client(&pki, &collector).await?;
    let mut stream = client.open().await?;
    // Unacked: batches 2 and 3 (they may or may not have committed before the kill).
    stream.send(&batch("node-a", 1, &second[10..20])).await?;
    stream.send(&batch("node-a", 2, &second[20..])).await?;
    let (x, y) = (ack(&mut stream).await?, ack(&mut stream).await?);
    assert!(x.committed && y.committed, "{x:?} {y:?}");
    assert!(x.inserted <= 10 && y.inserted <= 20, "{x:?} {y:?}");
    // What was acked before the kill is still there: re-sending it adds nothing.
    stream.send(&batch("node-a", 3, &second[..10])).await?;
    let old = ack(&mut stream).await?;
    assert_eq!((old.committed, old.inserted), (true, 0), "{old:?}");
    stream.finish();

    let counts = stored(&store_dir).await?;
    let mut want = ids(&first);
    want.extend(ids(&second));
    assert_eq!(counts.len(), want.len(), "{counts:?}");
    for id in &want {
        assert_eq!(
            counts.get(id),
            Some(&1),
            "event {id} stored {:?} times",
            counts.get(id)
        );
    }
    collector.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_store_dirs_stop_the_start_with_a_clear_error() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let data = tempfile::tempdir()?;

    // A file where the directory should be.
    let file = data.path().join("not-a-dir");
    std::fs::write(&file, "x")?;
    let err = Collector::start_embedded(&pki, &file, free_loopback_addr()?)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("collector exited") && err.contains("store directory"),
        "{err}"
    );

    // A file that is not a database.
    let foreign = data.path().join("foreign");
    std::fs::create_dir(&foreign)?;
    std::fs::write(
        foreign.join(FILE_NAME),
        "certainly not SQLite, but long enough to fill the hundred-byte header of one ......\n",
    )?;
    let err = Collector::start_embedded(&pki, &foreign, free_loopback_addr()?)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("is not an SQLite database"), "{err}");

    // A schema from a newer collector.
    let newer = data.path().join("newer");
    drop(EmbeddedStore::open(&newer, Duration::from_secs(5))?);
    rusqlite::Connection::open(newer.join(FILE_NAME))?.pragma_update(None, "user_version", 99)?;
    let err = Collector::start_embedded(&pki, &newer, free_loopback_addr()?)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("schema version 99"), "{err}");
    Ok(())
}

/// `cargo xtask dev --clickhouse off` runs `dev-stack --clickhouse off`: the stack's agent
/// spools kubectl's requests and ships them to the collector's embedded store.
#[tokio::test(flavor = "multi_thread")]
async fn dev_stack_with_clickhouse_off_ships_audit_events_to_the_embedded_store()
-> anyhow::Result<()> {
    use gatehouse_tests::harness::kubectl::Kubectl;
    use std::time::Instant;
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("dev");
    let bin_dir = gatehouse_tests::harness::stack::find_bin_dir()?;
    let stdout_path = dir.path().join("dev-stack.out");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dev-stack"))
        .arg(format!("--out-dir={}", out.display()))
        .arg("--clickhouse=off")
        .arg("--no-cgroups")
        .env("GATEHOUSE_BIN_DIR", &bin_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&stdout_path)?)
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !out.join("ready").exists() {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("dev-stack exited ({status})");
        }
        anyhow::ensure!(Instant::now() < deadline, "dev-stack not ready in 60s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let banner = std::fs::read_to_string(&stdout_path)?;
    let store_dir = out.join("audit");
    let listed = Kubectl::v1_32(&out.join("kubeconfig"))?
        .run(&["--context", "alice", "get", "pods", "-n", "dev"])
        .await;

    // The shipper sends within its batch interval; poll the file (bounded).
    let filter = RequestFilter {
        user: Some("alice".into()),
        verb: Some("list".into()),
        resource: Some("pods".into()),
        namespace: Some("dev".into()),
        ..RequestFilter::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        let (store, _) = EmbeddedStore::open(&store_dir, Duration::from_secs(10))?;
        let page = store.requests(&filter, &PageRequest::default()).await?;
        if !page.items.is_empty() || Instant::now() > deadline {
            break page.items;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid)?),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let stopped = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    assert!(
        banner.contains("audit store embedded SQLite"),
        "the banner names the store:\n{banner}"
    );
    listed?.ok()?;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].node, "dev-node");
    assert_eq!(found[0].status_code, 200);
    assert!(
        matches!(stopped, Ok(Ok(status)) if status.success()),
        "{stopped:?}"
    );
    Ok(())
}

/// The agent's own record of what it accepted: event id → count in its audit file.
fn accepted(audit: &Path) -> anyhow::Result<HashMap<String, u32>> {
    let text = std::fs::read_to_string(audit).unwrap_or_default();
    let mut ids = HashMap::new();
    for line in text.lines() {
        let event: AuditEvent = serde_json::from_str(line)?;
        *ids.entry(event.event_id().to_string()).or_insert(0) += 1;
    }
    Ok(ids)
}

/// Waits (bounded) until the store holds every event the agent accepted; returns both.
async fn wait_until_stored(
    store_dir: &Path,
    audit: &Path,
) -> anyhow::Result<(HashMap<String, u32>, HashMap<String, u32>)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let want = accepted(audit)?;
        let have = stored(store_dir).await?;
        if want.keys().all(|id| have.contains_key(id)) || tokio::time::Instant::now() > deadline {
            return Ok((want, have));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The real agent (spool + shipper) in front of the emulator, shipping to the real
/// collector with the embedded store: the collector is SIGKILLed right after a burst of
/// requests (batches in flight or unsent), requests go on while it is down, and after the
/// restart every accepted event is stored exactly once and the spool drains.
#[tokio::test(flavor = "multi_thread")]
async fn real_agent_re_sends_across_a_killed_collector_and_nothing_is_stored_twice()
-> anyhow::Result<()> {
    use gatehouse_tests::harness::kubectl::Kubectl;
    use gatehouse_tests::harness::stack::{Stack, StackOptions};
    const NODE: &str = "node-embedded";
    let pki = Pki::new()?;
    let (agent_cert, agent_key) = pki.agent(NODE)?.write(pki.dir.path(), "agent")?;
    let collector_ca = pki.dir.path().join("collector-ca.crt");
    pki.server_ca.write_cert(&collector_ca)?;
    let data = tempfile::tempdir()?;
    let store_dir = data.path().join("audit");
    let ingest = free_loopback_addr()?;
    let mut collector = Collector::start_embedded(&pki, &store_dir, ingest).await?;

    let dir = tempfile::tempdir()?;
    let audit = dir.path().join("audit.jsonl");
    let mut options = StackOptions::new(dir.path());
    options.agent_args = vec![
        format!("--audit-log={}", audit.display()),
        format!("--node-name={NODE}"),
        format!("--spool-dir={}", dir.path().join("spool").display()),
        format!("--collector-url=https://{ingest}"),
        format!("--collector-ca-file={}", collector_ca.display()),
        format!("--collector-client-cert={}", agent_cert.display()),
        format!("--collector-client-key={}", agent_key.display()),
        "--ship-batch-events=3".into(),
        "--ship-backoff-max=1s".into(),
    ];
    let stack = Stack::start(options).await?;
    let kubectl = Kubectl::v1_32(&stack.kubeconfig_for("alice")?)?;
    let requests = |n: usize| {
        let kubectl = &kubectl;
        async move {
            for _ in 0..n {
                kubectl.run(&["get", "pods", "-n", "dev"]).await?.ok()?;
            }
            anyhow::Ok(())
        }
    };

    requests(5).await?;
    let (want, have) = wait_until_stored(&store_dir, &audit).await?;
    assert!(!want.is_empty(), "the agent recorded nothing");
    assert_eq!(have, want, "first phase: stored ≠ accepted");

    requests(5).await?;
    collector.kill().await?;
    requests(5).await?;
    collector = Collector::start_embedded(&pki, &store_dir, ingest).await?;
    let (want, have) = wait_until_stored(&store_dir, &audit).await?;
    assert!(want.values().all(|n| *n == 1), "the audit file repeats ids");
    assert_eq!(have, want, "after a SIGKILL: stored ≠ accepted");

    let ops = stack
        .ops_addr
        .ok_or_else(|| anyhow::anyhow!("the stack runs no ops listener"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, metrics) = collector_support::http_get(ops, "/metrics").await?;
        let pending = collector_support::metric(&metrics, "gatehouse_agent_spool_pending_records");
        if pending == Some(0.0) {
            // The kill dropped the shipper's stream: it reconnected to the new collector.
            let reconnects =
                collector_support::metric(&metrics, "gatehouse_agent_ship_reconnects_total");
            assert!(reconnects.is_some_and(|n| n >= 1.0), "{metrics}");
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "spool still holds {pending:?} records"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack.shutdown().await;
    collector.stop().await?;
    Ok(())
}
