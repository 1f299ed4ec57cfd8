//! The whole audit path with real parts: kubectl → the real `gatehouse-agent` (spool +
//! shipper) → the real `gatehouse-collector` → a real ClickHouse 18.16. Every event the
//! agent accepted (its JSON-lines audit file is the witness) is stored exactly once, also
//! when the collector and ClickHouse go away and come back while requests keep flowing.
//!
//! Needs the binaries: `cargo build -p gatehouse-agent -p gatehouse-collector --bins`.

mod collector_support;

use collector_support::{Collector, Pki, http_get, metric};
use gatehouse_common::audit::AuditEvent;
use gatehouse_tests::clickhouse::ClickHouse;
use gatehouse_tests::harness::kubectl::Kubectl;
use gatehouse_tests::harness::ports::free_loopback_addr;
use gatehouse_tests::harness::stack::{Stack, StackOptions};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const DB: &str = "gatehouse";
const NODE: &str = "node-pipeline";
/// How long the events may take to arrive once everything is up (bounded, never a hang).
const ARRIVAL: Duration = Duration::from_secs(60);

/// The agent's own record of what it accepted: event id → count in its audit file.
fn accepted(audit: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = std::fs::read_to_string(audit).unwrap_or_default();
    let mut ids = BTreeMap::new();
    for line in text.lines() {
        let event: AuditEvent = serde_json::from_str(line)?;
        *ids.entry(event.event_id().to_string()).or_insert(0) += 1;
    }
    Ok(ids)
}

/// What ClickHouse holds: event id → number of rows (plain `count()`, no FINAL).
fn stored(ch: &ClickHouse) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = ch.query(&format!(
        "SELECT event_id, count() FROM {DB}.api_requests GROUP BY event_id FORMAT TSV"
    ))?;
    let mut ids = BTreeMap::new();
    for line in text.lines() {
        let (id, n) = line
            .split_once('\t')
            .ok_or_else(|| anyhow::anyhow!("odd row {line:?}"))?;
        ids.insert(id.to_string(), n.trim().parse()?);
    }
    Ok(ids)
}

/// Waits until ClickHouse holds every accepted event; returns both sides.
async fn wait_until_stored(
    ch: &ClickHouse,
    audit: &Path,
) -> anyhow::Result<(BTreeMap<String, u64>, BTreeMap<String, u64>)> {
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    loop {
        let want = accepted(audit)?;
        // The table may not exist yet while the collector is still migrating.
        let have = stored(ch).unwrap_or_default();
        if want.keys().all(|id| have.contains_key(id)) || tokio::time::Instant::now() > deadline {
            return Ok((want, have));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn requests(kubectl: &Kubectl, n: usize) -> anyhow::Result<()> {
    for _ in 0..n {
        kubectl.run(&["get", "pods", "-n", "dev"]).await?.ok()?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_accepted_event_reaches_clickhouse_exactly_once_through_outages() -> anyhow::Result<()>
{
    let Some(mut ch) = ClickHouse::launch()? else {
        return Ok(());
    };
    let pki = Pki::new()?;
    let (agent_cert, agent_key) = pki.agent(NODE)?.write(pki.dir.path(), "agent")?;
    let collector_ca = pki.dir.path().join("collector-ca.crt");
    pki.server_ca.write_cert(&collector_ca)?;
    let ingest = free_loopback_addr()?;
    let mut collector = Collector::start_on(&pki, &ch.url(), DB, ingest, &[]).await?;

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
        // Small batches and a short backoff cap, so the outages below are crossed by
        // several batches and reconnects within the test's time.
        "--ship-batch-events=7".into(),
        "--ship-backoff-max=1s".into(),
    ];
    let stack = Stack::start(options).await?;
    let kubectl = Kubectl::v1_32(&stack.kubeconfig_for("alice")?)?;

    // 1. Everything up.
    requests(&kubectl, 10).await?;
    let (want, have) = wait_until_stored(&ch, &audit).await?;
    assert!(!want.is_empty(), "the agent recorded nothing");
    assert_eq!(have, want, "first phase: stored ≠ accepted");

    // 2. The collector goes away; requests keep being served and spooled.
    collector.stop().await?;
    requests(&kubectl, 10).await?;
    collector = Collector::start_on(&pki, &ch.url(), DB, ingest, &[]).await?;
    let (want, have) = wait_until_stored(&ch, &audit).await?;
    assert_eq!(have, want, "after a collector outage: stored ≠ accepted");

    // 3. ClickHouse goes away under a running collector: batches are not acked, the agent
    //    keeps them and re-sends; nothing is stored twice when ClickHouse returns.
    ch.stop();
    requests(&kubectl, 10).await?;
    ch.start()?;
    let (want, have) = wait_until_stored(&ch, &audit).await?;
    assert_eq!(have, want, "after a ClickHouse outage: stored ≠ accepted");
    assert!(
        have.values().all(|n| *n == 1),
        "duplicated rows: {:?}",
        have.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    // Every event the agent wrote down is a distinct event (the witness is sound).
    assert!(want.values().all(|n| *n == 1), "the audit file repeats ids");

    // The agent's spool drains once everything is acked.
    let ops = stack
        .ops_addr
        .ok_or_else(|| anyhow::anyhow!("the stack runs no ops listener"))?;
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    loop {
        let (_, metrics) = http_get(ops, "/metrics").await?;
        let pending = metric(&metrics, "gatehouse_agent_spool_pending_records");
        if pending == Some(0.0) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "spool still holds {pending:?} records"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The rows carry the agent's node name from its certificate-checked batches.
    let nodes = ch.query(&format!(
        "SELECT DISTINCT node FROM {DB}.api_requests FORMAT TSV"
    ))?;
    assert_eq!(nodes.trim(), NODE);

    stack.shutdown().await;
    collector.stop().await?;
    Ok(())
}
