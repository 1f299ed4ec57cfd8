//! Ingest benchmark driven by `cargo xtask bench ingest`: events/s from a pre-filled agent
//! spool (the real `Spool` + `Shipper`) through the real release collector (mTLS) into a
//! real ClickHouse, counted in ClickHouse; a baseline of the same rows bulk-inserted
//! straight into a scratch table with the same client; and the p50/p99 of one user's day
//! among `--query-rows` loaded rows. Prints a report and one JSON line (last line).

use anyhow::{Context as _, bail};
use clap::Parser;
use gatehouse_agent::audit::sink::AuditSink;
use gatehouse_agent::ship::{ShipConfig, ShipMetrics, Shipper};
use gatehouse_agent::spool::{Spool, SpoolConfig, SpoolMetrics};
use gatehouse_collector::store::clickhouse::{ClickHouseConfig, ClickHouseStore};
use gatehouse_collector::store::query::{AuditQuery as _, PageRequest, RequestFilter};
use gatehouse_collector::store::rows::ApiRequestRow;
use gatehouse_common::audit::{ApiRequestEvent, AuditEvent, AuthMethod, Decision};
use gatehouse_tests::clickhouse::ClickHouse;
use gatehouse_tests::pki::Ca;
use rand::Rng as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Bench database (the collector creates and migrates it).
const DB: &str = "gatehouse_bench";
/// The agent name (CN of its client certificate).
const NODE: &str = "bench-node";
/// Distinct users, namespaces and days of the synthetic events and the query table.
const USERS: u64 = 1000;
const NAMESPACES: u64 = 50;
const DAYS: u64 = 30;
/// 2025-10-01T00:00:00Z, the first day of the query table.
const DAY0: i64 = 1_759_276_800;

/// Measures the ingest pipeline and the per-user query.
#[derive(Parser)]
struct Args {
    /// The release `gatehouse-collector` binary to measure.
    #[arg(long)]
    collector_bin: PathBuf,
    /// Events pre-filled into the spool and shipped.
    #[arg(long, default_value_t = 500_000)]
    events: usize,
    /// Most events in one shipped batch (the agent's `--ship-batch-events`).
    #[arg(long, default_value_t = 5000)]
    batch_events: usize,
    /// About the most payload bytes in one batch (0 = the agent's default).
    #[arg(long, default_value_t = 0)]
    batch_bytes: usize,
    /// Batches in flight (the agent's `--ship-window`).
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// The collector's `--max-in-flight`.
    #[arg(long, default_value_t = 4)]
    max_in_flight: u64,
    /// Rows loaded for the query measurement (0 skips it).
    #[arg(long, default_value_t = 10_000_000)]
    query_rows: u64,
    /// Timed query runs (each for a different user and day).
    #[arg(long, default_value_t = 50)]
    query_runs: usize,
    /// Give up on the pipeline run after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Run `perf record -g` on the collector for the pipeline run, output into this file.
    #[arg(long)]
    perf_out: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.events > 0, "--events must be positive");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(&args))
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let Some(ch) = ClickHouse::launch()? else {
        bail!("clickhouse-server is missing (SKIP above); run `cargo xtask setup`");
    };
    let work = tempfile::tempdir()?;
    let pki = write_pki(work.path())?;
    let mut collector = start_collector(args, &pki, &ch.url(), work.path())?;

    println!(
        "pre-filling the spool with {} synthetic API request events",
        args.events
    );
    let events: Vec<AuditEvent> = {
        let mut rng = rand::rng();
        let now = chrono::Utc::now().timestamp();
        (0..args.events)
            .map(|i| synthetic_event(i as u64, now - 600 + (i as i64 % 600), &mut rng))
            .collect()
    };
    let spool_metrics = SpoolMetrics::default();
    let spool = Spool::open(
        SpoolConfig::new(work.path().join("spool")),
        spool_metrics.clone(),
    )?;
    for chunk in events.chunks(16_384) {
        for e in chunk {
            spool.emit(e);
        }
        // The queue holds 64k events: let the writer catch up before the next chunk.
        anyhow::ensure!(spool.flush(Duration::from_secs(60)), "spool did not flush");
    }
    anyhow::ensure!(
        spool.pending() == args.events as u64,
        "spool holds {} of {} events (dropped?)",
        spool.pending(),
        args.events
    );

    // --- pipeline: spool -> shipper -> collector -> ClickHouse ---
    let defaults = ShipConfig::new("https://127.0.0.1", NODE);
    let batch_bytes = match args.batch_bytes {
        0 => defaults.batch_max_bytes,
        n => n,
    };
    println!(
        "shipping: batch <= {} events / {batch_bytes} bytes, window {}, collector \
         --max-in-flight={}",
        args.batch_events, args.window, args.max_in_flight
    );
    let ship = ShipConfig {
        batch_max_bytes: batch_bytes,
        ca_file: Some(pki.server_ca.clone()),
        client_cert: Some(pki.agent_cert.clone()),
        client_key: Some(pki.agent_key.clone()),
        batch_max_events: args.batch_events,
        window: args.window,
        ack_timeout: Duration::from_secs(60),
        ..ShipConfig::new(format!("https://{}", collector.ingest), NODE)
    };
    let ship_metrics = ShipMetrics::default();
    let perf = match &args.perf_out {
        Some(out) => Some(start_perf(collector.child.id(), out)?),
        None => None,
    };
    let cpu_before = Cpu::sample(collector.child.id(), ch.pid())?;
    let stop = CancellationToken::new();
    let started = Instant::now();
    let task = Shipper::new(spool.clone(), ship, ship_metrics.clone())?.spawn(stop.clone());
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let target = args.events as u64;
    let mut acked_at = None;
    let committed_at = loop {
        let stored = count(&ch, "api_requests")?;
        if acked_at.is_none() && spool.pending() == 0 {
            acked_at = Some(started.elapsed());
        }
        if stored >= target {
            break started.elapsed();
        }
        if Instant::now() > deadline {
            bail!(
                "only {stored} of {target} rows after {}s (collector log: {})",
                args.timeout_secs,
                collector.log.display()
            );
        }
        if let Some(status) = collector.child.try_wait()? {
            bail!(
                "collector exited ({status}); log: {}",
                collector.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cpu = Cpu::sample(collector.child.id(), ch.pid())?.since(&cpu_before);
    if let Some(mut p) = perf {
        // SIGINT makes perf write its file and exit.
        signal(&p, libc::SIGINT);
        let _ = p.wait();
    }
    while spool.pending() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let acked_at = acked_at.unwrap_or_else(|| started.elapsed());
    stop.cancel();
    let _ = task.await;
    spool.close();
    let stored = count(&ch, "api_requests")?;
    anyhow::ensure!(
        stored == target,
        "stored {stored} rows for {target} events: not exactly once"
    );
    let pipeline_eps = target as f64 / committed_at.as_secs_f64();
    println!(
        "pipeline: {target} events committed in {:.2}s = {pipeline_eps:.0} events/s \
         (spool fully acked after {:.2}s, reconnects {})",
        committed_at.as_secs_f64(),
        acked_at.as_secs_f64(),
        ship_metrics.reconnects.get()
    );
    let per_event = |s: f64| s * 1e6 / target as f64;
    println!(
        "CPU per event: collector {:.1} us, clickhouse {:.1} us, agent side (this process) {:.1} us",
        per_event(cpu.collector),
        per_event(cpu.clickhouse),
        per_event(cpu.this)
    );

    // --- baseline: the same rows, same client, straight into a scratch table ---
    let client = ::clickhouse::Client::default()
        .with_url(ch.url())
        .with_database(DB)
        .with_validation(false)
        .with_compression(::clickhouse::Compression::None);
    ch.query(&format!(
        "CREATE TABLE `{DB}`.baseline AS `{DB}`.api_requests"
    ))?;
    let rows: Vec<ApiRequestRow> = events
        .iter()
        .filter_map(|e| match e {
            AuditEvent::ApiRequest(r) => Some(ApiRequestRow::new(r, false)),
            _ => None,
        })
        .collect();
    drop(events);
    let base_started = Instant::now();
    for chunk in rows.chunks(args.batch_events.max(1)) {
        let mut insert = client.insert::<ApiRequestRow>("baseline").await?;
        for r in chunk {
            insert.write(r).await?;
        }
        insert.end().await?;
    }
    let base_batched = base_started.elapsed();
    ch.query(&format!("TRUNCATE TABLE `{DB}`.baseline"))
        .or_else(|_| {
            ch.query(&format!("DROP TABLE `{DB}`.baseline"))
                .and_then(|_| {
                    ch.query(&format!(
                        "CREATE TABLE `{DB}`.baseline AS `{DB}`.api_requests"
                    ))
                })
        })?;
    let base_started = Instant::now();
    {
        let mut insert = client.insert::<ApiRequestRow>("baseline").await?;
        for r in &rows {
            insert.write(r).await?;
        }
        insert.end().await?;
    }
    let base_bulk = base_started.elapsed();
    let base_rows = count(&ch, "baseline")?;
    anyhow::ensure!(base_rows == target, "baseline stored {base_rows} rows");
    let batched_eps = target as f64 / base_batched.as_secs_f64();
    let bulk_eps = target as f64 / base_bulk.as_secs_f64();
    println!(
        "baseline (same client, RowBinary, no check): {batched_eps:.0} rows/s in {}-row INSERTs, \
         {bulk_eps:.0} rows/s as one INSERT",
        args.batch_events
    );
    drop(rows);

    // --- query: one user over one day among --query-rows rows ---
    let query = if args.query_rows > 0 {
        Some(measure_query(&ch, &client, args).await?)
    } else {
        None
    };

    collector.stop();
    let json = serde_json::json!({
        "bench": "ingest",
        "events": target,
        "batch_events": args.batch_events,
        "batch_bytes": batch_bytes,
        "window": args.window,
        "max_in_flight": args.max_in_flight,
        "pipeline_seconds": committed_at.as_secs_f64(),
        "pipeline_events_per_sec": pipeline_eps,
        "acked_seconds": acked_at.as_secs_f64(),
        "baseline_batched_rows_per_sec": batched_eps,
        "baseline_bulk_rows_per_sec": bulk_eps,
        "ratio_vs_batched": pipeline_eps / batched_eps,
        "ratio_vs_bulk": pipeline_eps / bulk_eps,
        "cpu_us_per_event": {"collector": per_event(cpu.collector),
            "clickhouse": per_event(cpu.clickhouse), "agent": per_event(cpu.this)},
        "query": query,
    });
    println!("{json}");
    Ok(())
}

/// Loads `--query-rows` rows (`INSERT ... SELECT` from `numbers()`), then times the page of
/// one user's day the query API asks for: `AuditQuery::requests(user, day, day+1, 100)`.
async fn measure_query(
    ch: &ClickHouse,
    client: &::clickhouse::Client,
    args: &Args,
) -> anyhow::Result<serde_json::Value> {
    let n = args.query_rows;
    ch.query(&format!("TRUNCATE TABLE `{DB}`.api_requests"))?;
    println!("loading {n} rows: {USERS} users, {NAMESPACES} namespaces, {DAYS} days");
    let loaded = Instant::now();
    // Spread evenly over DAYS days; user/namespace/verb/resource hashed from the row
    // number so every user has events every day, as a busy cluster's audit log does.
    let span = DAYS * 86_400;
    ch.query(&format!(
        "INSERT INTO `{DB}`.api_requests (event_id, request_id, time, cluster, node, user, \
         groups, auth_method, source, user_agent, method, path, query, is_resource_request, verb, \
         api_group, api_version, resource, namespace, name, decision, decided_by, answered_by, \
         status_code, latency_ms, duration_ms, bytes_in, bytes_out) \
         SELECT concat('ev-', toString(number)), concat('rq-', toString(number)), \
         toDateTime({DAY0} + intDiv(number * {span}, {n})), 'prod', \
         concat('node-', toString(cityHash64(number, 5) % 40)), \
         concat('user', toString(cityHash64(number, 1) % {USERS}), '@example.com'), \
         ['engineers', 'oncall'], 'oidc', '10.0.0.1', 'kubectl/v1.32.0 (linux/amd64)', 'GET', \
         concat('/api/v1/namespaces/ns-', toString(cityHash64(number, 2) % {NAMESPACES}), '/pods'), \
         '', 1, ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'][cityHash64(number, 3) % 7 + 1], \
         '', 'v1', ['pods', 'deployments', 'services', 'configmaps', 'secrets'][cityHash64(number, 4) % 5 + 1], \
         concat('ns-', toString(cityHash64(number, 2) % {NAMESPACES})), \
         concat('obj-', toString(number % 997)), 'allow', 'policy', 'upstream', 200, 1.5, 2.5, 0, 1024 \
         FROM numbers({n})"
    ))?;
    let load_s = loaded.elapsed().as_secs_f64();
    let stored = count(ch, "api_requests")?;
    anyhow::ensure!(stored == n, "loaded {stored} of {n} rows");
    let parts: u64 = ch
        .query(&format!(
            "SELECT count() FROM system.parts WHERE database = '{DB}' AND table = 'api_requests' AND active"
        ))?
        .trim()
        .parse()?;
    println!(
        "loaded in {load_s:.1}s ({:.0} rows/s), {parts} active parts",
        n as f64 / load_s
    );

    // What the query API asks: `AuditQuery::requests(user=U, since=day, until=day+1,
    // limit=100)` on the collector's `ClickHouseStore` (events decoded), for a random user
    // and day each run. Then, for reference, the same page as plain SQL without `FINAL`.
    let store = ClickHouseStore::new(ClickHouseConfig::new(ch.url(), DB));
    store.migrate().await?;
    let mut rng = rand::rng();
    let mut picks: Vec<(String, i64)> = (0..args.query_runs + 3)
        .map(|_| {
            (
                format!("user{}@example.com", rng.random_range(0..USERS)),
                DAY0 + 86_400 * rng.random_range(0..DAYS) as i64,
            )
        })
        .collect();
    let mut trait_ms = Vec::with_capacity(picks.len());
    let mut returned = 0usize;
    for (run, (user, day)) in picks.iter().enumerate() {
        let filter = RequestFilter {
            user: Some(user.clone()),
            since: chrono::DateTime::from_timestamp(*day, 0),
            until: chrono::DateTime::from_timestamp(day + 86_400, 0),
            ..RequestFilter::default()
        };
        let page = PageRequest {
            limit: 100,
            after: None,
        };
        let t = Instant::now();
        let got = store.requests(&filter, &page).await?;
        let took = t.elapsed();
        // The first runs warm the caches (a query API in use has them warm).
        if run >= 3 {
            trait_ms.push(took.as_secs_f64() * 1e3);
            returned += got.items.len();
        }
    }
    let per_page = returned as f64 / trait_ms.len().max(1) as f64;
    anyhow::ensure!(per_page > 0.0, "the user query returned nothing");
    let mut sql_ms = Vec::with_capacity(picks.len());
    picks.reverse();
    for (run, (user, day)) in picks.iter().enumerate() {
        let t = Instant::now();
        client
            .query(
                "SELECT * FROM api_requests WHERE user = ? AND time >= toDateTime(?) \
                 AND time < toDateTime(?) ORDER BY time DESC, event_id DESC LIMIT 101",
            )
            .bind(user)
            .bind(*day)
            .bind(day + 86_400)
            .fetch_bytes("RowBinary")?
            .collect()
            .await?;
        if run >= 3 {
            sql_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let (p50, p99) = percentiles(&mut trait_ms);
    let (sql50, sql99) = percentiles(&mut sql_ms);
    println!(
        "query one user's day, AuditQuery::requests on ClickHouseStore (FINAL), limit 100: \
         p50 {p50:.1} ms, p99 {p99:.1} ms over {} runs, {per_page:.0} events per page",
        trait_ms.len()
    );
    println!("same page as plain SQL without FINAL: p50 {sql50:.1} ms, p99 {sql99:.1} ms");
    Ok(
        serde_json::json!({"rows": n, "load_seconds": load_s, "parts": parts,
        "runs": trait_ms.len(), "p50_ms": p50, "p99_ms": p99, "events_per_page": per_page,
        "via": "AuditQuery::requests on ClickHouseStore",
        "plain_sql_no_final": {"p50_ms": sql50, "p99_ms": sql99}}),
    )
}

/// (p50, p99) of `samples`, sorted in place.
fn percentiles(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        samples
            .get(((samples.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    (pct(0.5), pct(0.99))
}

/// A realistic API request: ~1000 users, 50 namespaces, a mix of verbs and resources.
fn synthetic_event(i: u64, time: i64, rng: &mut impl rand::Rng) -> AuditEvent {
    const VERBS: [&str; 7] = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    const RESOURCES: [&str; 5] = ["pods", "deployments", "services", "configmaps", "secrets"];
    let ns = format!("ns-{}", rng.random_range(0..NAMESPACES));
    let resource = RESOURCES[(i % 5) as usize];
    AuditEvent::ApiRequest(ApiRequestEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        request_id: uuid::Uuid::new_v4().to_string(),
        time: chrono::DateTime::from_timestamp(time, rng.random_range(0..1_000_000_000))
            .unwrap_or_default(),
        cluster: "prod".into(),
        node: NODE.into(),
        user: format!("user{}@example.com", rng.random_range(0..USERS)),
        groups: vec!["engineers".into(), "oncall".into()],
        auth_method: AuthMethod::Oidc,
        source: "10.0.3.17".into(),
        user_agent: "kubectl/v1.32.0 (linux/amd64) kubernetes/abcdef".into(),
        method: "GET".into(),
        path: format!("/api/v1/namespaces/{ns}/{resource}"),
        query: "limit=500".into(),
        is_resource_request: true,
        verb: VERBS[(i % 7) as usize].into(),
        api_version: "v1".into(),
        resource: resource.into(),
        namespace: ns,
        decision: Decision::Allow,
        decided_by: "policy".into(),
        status_code: 200,
        latency_ms: 1.25,
        duration_ms: 3.5,
        bytes_out: 2048,
        ..ApiRequestEvent::default()
    })
}

/// Paths of the bench's certificates.
struct PkiFiles {
    dir: PathBuf,
    server_ca: PathBuf,
    agent_cert: PathBuf,
    agent_key: PathBuf,
}

fn write_pki(dir: &Path) -> anyhow::Result<PkiFiles> {
    let server_ca = Ca::new("collector-ca")?;
    let agent_ca = Ca::new("agent-ca")?;
    server_ca
        .issue_server("collector", &[])?
        .write(dir, "collector")?;
    agent_ca.write_cert(&dir.join("agent-ca.crt"))?;
    server_ca.write_cert(&dir.join("collector-ca.crt"))?;
    let (agent_cert, agent_key) = agent_ca.issue_client(NODE, &[])?.write(dir, "agent")?;
    Ok(PkiFiles {
        dir: dir.to_path_buf(),
        server_ca: dir.join("collector-ca.crt"),
        agent_cert,
        agent_key,
    })
}

/// The collector child process.
struct Collector {
    child: Child,
    ingest: SocketAddr,
    log: PathBuf,
}

impl Collector {
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn start_collector(
    args: &Args,
    pki: &PkiFiles,
    url: &str,
    work: &Path,
) -> anyhow::Result<Collector> {
    let (ops, ingest) = (free_addr()?, free_addr()?);
    let log = work.join("collector.log");
    let file = std::fs::File::create(&log)?;
    let d = &pki.dir;
    let child = Command::new(&args.collector_bin)
        .arg(format!("--listen={ops}"))
        .arg(format!("--ingest-listen={ingest}"))
        .arg(format!(
            "--tls-cert-file={}",
            d.join("collector.crt").display()
        ))
        .arg(format!(
            "--tls-key-file={}",
            d.join("collector.key").display()
        ))
        .arg(format!(
            "--agent-ca-file={}",
            d.join("agent-ca.crt").display()
        ))
        .arg(format!("--clickhouse-url={url}"))
        .arg(format!("--clickhouse-database={DB}"))
        .arg(format!("--max-in-flight={}", args.max_in_flight))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {}", args.collector_bin.display()))?;
    let mut collector = Collector { child, ingest, log };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(ingest).is_err() || TcpStream::connect(ops).is_err() {
        if let Some(status) = collector.child.try_wait()? {
            bail!(
                "collector exited ({status}): {}",
                std::fs::read_to_string(&collector.log).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!("collector did not listen within 30s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(collector)
}

fn count(ch: &ClickHouse, table: &str) -> anyhow::Result<u64> {
    // A missing table (the collector migrates on its first batch) counts as empty.
    match ch.query(&format!("SELECT count() FROM `{DB}`.`{table}`")) {
        Ok(body) => Ok(body.trim().parse()?),
        Err(e) if e.to_string().contains("doesn't exist") => Ok(0),
        Err(e) => Err(e),
    }
}

/// CPU seconds of the collector, ClickHouse and this process at one moment.
struct Cpu {
    collector: f64,
    clickhouse: f64,
    this: f64,
}

impl Cpu {
    fn sample(collector: u32, clickhouse: Option<u32>) -> anyhow::Result<Self> {
        Ok(Self {
            collector: cpu_seconds(&collector.to_string())?,
            clickhouse: clickhouse.map_or(Ok(f64::NAN), |p| cpu_seconds(&p.to_string()))?,
            this: cpu_seconds("self")?,
        })
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            collector: self.collector - before.collector,
            clickhouse: self.clickhouse - before.clickhouse,
            this: self.this - before.this,
        }
    }
}

/// utime + stime of `/proc/<pid>`, in seconds.
fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("short stat")?.parse::<f64>()?)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ticks(11)? + ticks(12)?) / hz)
}

fn start_perf(pid: u32, out: &Path) -> anyhow::Result<Child> {
    let child = Command::new("perf")
        .args(["record", "-g", "-F", "499", "-p", &pid.to_string(), "-o"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting perf")?;
    // perf needs a moment to attach before the run starts.
    std::thread::sleep(Duration::from_millis(500));
    Ok(child)
}

fn signal(child: &Child, sig: i32) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(pid, sig) };
    }
}
