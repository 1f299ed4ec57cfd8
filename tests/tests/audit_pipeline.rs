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

/// The agent (spool + shipper, mTLS) in front of the emulator, shipping to a collector on
/// a fixed ingest port (so that a restarted collector comes back where the agent points).
struct Pipeline {
    pki: Pki,
    ingest: std::net::SocketAddr,
    collector: Collector,
    _dir: tempfile::TempDir,
    /// The agent's JSON-lines audit file: the witness of what it accepted.
    audit: std::path::PathBuf,
    stack: Stack,
}

impl Pipeline {
    async fn start(ch: &ClickHouse, batch_events: usize) -> anyhow::Result<Self> {
        let pki = Pki::new()?;
        let (agent_cert, agent_key) = pki.agent(NODE)?.write(pki.dir.path(), "agent")?;
        let collector_ca = pki.dir.path().join("collector-ca.crt");
        pki.server_ca.write_cert(&collector_ca)?;
        let ingest = free_loopback_addr()?;
        let collector = Collector::start_on(&pki, &ch.url(), DB, ingest, &[]).await?;

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
            format!("--ship-batch-events={batch_events}"),
            "--ship-backoff-max=1s".into(),
        ];
        let stack = Stack::start(options).await?;
        Ok(Self {
            pki,
            ingest,
            collector,
            _dir: dir,
            audit,
            stack,
        })
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
    // Small batches, so the outages below are crossed by several batches and reconnects
    // within the test's time.
    let Pipeline {
        pki,
        ingest,
        mut collector,
        _dir,
        audit,
        stack,
    } = Pipeline::start(&ch, 7).await?;
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

/// Requests that completed with 200 (the load driver's count).
static OK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The figure: this many requests through the agent, each stored exactly once.
const LOAD_REQUESTS: u64 = 10_000;

/// `workers` loops of `GET /api/v1/namespaces/dev/pods` through the agent until
/// [`LOAD_REQUESTS`] have succeeded. Connection errors (the agent restarting) and non-200
/// answers are retried: the agent's audit file, not this count, says what it accepted.
async fn drive_load(agent_url: String, ca_pem: String, token: String, workers: usize) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use std::sync::atomic::Ordering;
    let Ok(tls) = gatehouse_tests::pki::client_config_trusting(&ca_pem) else {
        return;
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let uri: http::Uri = match format!("{agent_url}/api/v1/namespaces/dev/pods").parse() {
        Ok(uri) => uri,
        Err(_) => return,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (client, uri, token) = (client.clone(), uri.clone(), token.clone());
        tasks.spawn(async move {
            while OK.load(Ordering::SeqCst) < LOAD_REQUESTS {
                let Ok(req) = http::Request::get(uri.clone())
                    .header("authorization", format!("Bearer {token}"))
                    .body(Empty::new())
                else {
                    return;
                };
                let answer =
                    tokio::time::timeout(Duration::from_secs(10), client.request(req)).await;
                match answer {
                    Ok(Ok(resp)) => {
                        let ok = resp.status() == http::StatusCode::OK;
                        // Workers finishing together may pass the figure by a few; the
                        // final check compares rows with this count, not with the figure.
                        if resp.into_body().collect().await.is_ok() && ok {
                            OK.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Waits until the load driver has seen `n` successes (bounded).
async fn load_reached(n: u64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while OK.load(std::sync::atomic::Ordering::SeqCst) < n {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "load stalled at {} successful requests (waiting for {n})",
            OK.load(std::sync::atomic::Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_requests_survive_collector_kills_an_agent_restart_and_a_clickhouse_stop()
-> anyhow::Result<()> {
    let Some(mut ch) = ClickHouse::launch()? else {
        return Ok(());
    };
    let Pipeline {
        pki,
        ingest,
        mut collector,
        _dir,
        audit,
        mut stack,
    } = Pipeline::start(&ch, 100).await?;
    let token = stack
        .issuer
        .mint_dev("alice")
        .ok_or_else(|| anyhow::anyhow!("alice is not a dev user"))??;
    let ca_pem = std::fs::read_to_string(stack.ca_cert_path())?;
    let load = tokio::spawn(drive_load(stack.agent_url().to_string(), ca_pem, token, 8));

    // Mid-run: the collector is killed (no drain) and comes back, twice.
    for at in [1_500, 3_500] {
        load_reached(at).await?;
        collector.kill().await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        collector = Collector::start_on(&pki, &ch.url(), DB, ingest, &[]).await?;
    }
    // The agent is restarted once (SIGTERM, spool kept on disk, same port).
    load_reached(5_500).await?;
    stack.restart_agent().await?;
    // ClickHouse is stopped for 20 s under the running collector.
    load_reached(7_000).await?;
    ch.stop();
    tokio::time::sleep(Duration::from_secs(20)).await;
    ch.start()?;
    load_reached(LOAD_REQUESTS).await?;
    load.await?;

    let (want, have) = wait_until_stored(&ch, &audit).await?;
    let lost: Vec<_> = want.keys().filter(|id| !have.contains_key(*id)).collect();
    let extra: Vec<_> = have.keys().filter(|id| !want.contains_key(*id)).collect();
    let duplicated: Vec<_> = have.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        lost.is_empty(),
        "{} accepted events never stored",
        lost.len()
    );
    assert!(
        extra.is_empty(),
        "{} stored events the agent never accepted",
        extra.len()
    );
    assert!(
        duplicated.is_empty(),
        "{} events stored twice",
        duplicated.len()
    );
    assert!(want.values().all(|n| *n == 1), "the audit file repeats ids");
    // Every successful request is one 200 row (retried failures are rows of their own).
    let ok_rows: u64 = ch
        .query(&format!(
            "SELECT count() FROM {DB}.api_requests WHERE path = '/api/v1/namespaces/dev/pods' \
             AND status_code = 200 FORMAT TSV"
        ))?
        .trim()
        .parse()?;
    let ok_seen = OK.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!(
        "accepted {} events, stored {} rows, {ok_seen} successful requests, {ok_rows} 200 rows",
        want.len(),
        have.values().sum::<u64>()
    );
    assert_eq!(ok_rows, ok_seen, "200 rows ≠ successful requests");

    stack.shutdown().await;
    collector.stop().await?;
    Ok(())
}
