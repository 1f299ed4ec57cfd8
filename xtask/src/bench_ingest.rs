//! `cargo xtask bench ingest`: events/s from a pre-filled agent spool to committed
//! ClickHouse rows, against ClickHouse's own bulk insert of the same rows (the baseline),
//! the p50/p99 of one user's day among 10M rows, and the spool's `emit` p99 (the `bench
//! spool` code, shorter run). The measuring is done by the release `ingest_bench` example
//! of the tests crate (real ClickHouse 18.16, the real release collector over mTLS, the
//! agent's real spool and shipper); this prints the targets table and writes the JSON to
//! `<target>/bench/ingest-<unix-seconds>.json`.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::bench_spool::{self, SpoolOptions};
use crate::util::{self, Paths};

/// Knobs of `cargo xtask bench ingest` (defaults: the figures, bounded runs).
#[derive(Debug, Clone, clap::Args)]
pub struct IngestOptions {
    /// Events pre-filled into the spool, then shipped and counted in ClickHouse.
    #[arg(long, default_value_t = 500_000)]
    pub events: usize,
    /// Most events per shipped batch (the agent's `--ship-batch-events`).
    #[arg(long, default_value_t = 5000)]
    pub batch_events: usize,
    /// Batches in flight (the agent's `--ship-window`).
    #[arg(long, default_value_t = 4)]
    pub window: usize,
    /// The collector's `--max-in-flight`.
    #[arg(long, default_value_t = 4)]
    pub max_in_flight: u64,
    /// Rows loaded for the query measurement (0 skips it).
    #[arg(long, default_value_t = 10_000_000)]
    pub query_rows: u64,
    /// Timed runs of the one-user-one-day query.
    #[arg(long, default_value_t = 50)]
    pub query_runs: usize,
    /// Events of the spool `emit` run (paced at 20k/s; 0 skips it).
    #[arg(long, default_value_t = 200_000)]
    pub spool_events: usize,
    /// Record the collector with `perf record -g` during the pipeline run into this file.
    #[arg(long, value_name = "FILE")]
    pub perf_out: Option<std::path::PathBuf>,
}

/// Runs the whole bench.
pub fn ingest(paths: &Paths, options: &IngestOptions) -> anyhow::Result<()> {
    util::step("building the release collector and the ingest_bench driver");
    // One invocation: two would resolve features differently and rebuild shared crates.
    let status = util::cargo()
        .args(["build", "--release", "-p", "gatehouse-collector", "--bin"])
        .args(["gatehouse-collector", "-p", "gatehouse-tests", "--example"])
        .arg("ingest_bench")
        .current_dir(&paths.root)
        .status()
        .context("running cargo build --release")?;
    if !status.success() {
        bail!("cargo build --release (collector, ingest_bench) failed");
    }
    let spool = if options.spool_events > 0 {
        bench_spool::run(
            paths,
            &SpoolOptions {
                events: options.spool_events,
                rate: 20_000,
            },
        )?
    } else {
        None
    };

    util::step("ingest pipeline, baseline and query (release, real ClickHouse + collector)");
    let release = paths.target_dir.join("release");
    let mut command = std::process::Command::new(release.join("examples/ingest_bench"));
    command
        .arg("--collector-bin")
        .arg(release.join("gatehouse-collector"))
        .arg(format!("--events={}", options.events))
        .arg(format!("--batch-events={}", options.batch_events))
        .arg(format!("--window={}", options.window))
        .arg(format!("--max-in-flight={}", options.max_in_flight))
        .arg(format!("--query-rows={}", options.query_rows))
        .arg(format!("--query-runs={}", options.query_runs))
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    if let Some(out) = &options.perf_out {
        command.arg("--perf-out").arg(out);
    }
    util::note(format_args!("$ {}", util::describe(&command)));
    let mut child = command.spawn().context("starting ingest_bench")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut result = None;
    // Progress lines as they come (the run takes minutes); the JSON line is the result.
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line.starts_with('{') {
            result = Some(serde_json::from_str::<Value>(&line).context("parsing its JSON")?);
        } else {
            println!("    {line}");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("ingest_bench failed ({status})");
    }
    let ingest = result.context("ingest_bench printed no result")?;
    let record = report(options, &ingest, spool.as_ref());
    let dir = paths.target_dir.join("bench");
    std::fs::create_dir_all(&dir)?;
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let file = dir.join(format!("ingest-{secs}.json"));
    std::fs::write(&file, serde_json::to_vec_pretty(&record)?)?;
    println!("\nresults: {}", file.display());
    Ok(())
}

/// Prints the targets table; returns the JSON record.
fn report(options: &IngestOptions, ingest: &Value, spool: Option<&Value>) -> Value {
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let eps = num(&ingest["pipeline_events_per_sec"]);
    let bulk = num(&ingest["baseline_bulk_rows_per_sec"]);
    let batched = num(&ingest["baseline_batched_rows_per_sec"]);
    let (p50, p99) = (
        num(&ingest["query"]["p50_ms"]),
        num(&ingest["query"]["p99_ms"]),
    );
    let spool_p99 = spool.map_or(f64::NAN, |s| num(&s["p99_us"]));
    let verdict = |ok: bool, got: f64| {
        if got.is_nan() {
            "n/a"
        } else if ok {
            "PASS"
        } else {
            "MISS"
        }
    };
    println!(
        "\n{} events, batches of <= {} events, window {}, collector --max-in-flight={}",
        options.events, options.batch_events, options.window, options.max_in_flight
    );
    println!(
        "{:<52} {:>12} {:>12}  verdict",
        "measure", "result", "target"
    );
    let line = |what: &str, got: f64, target: &str, ok: bool| {
        println!("{what:<52} {got:>12.1} {target:>12}  {}", verdict(ok, got));
    };
    line(
        "pipeline spool -> ClickHouse (events/s)",
        eps,
        ">= 50000",
        eps >= 50_000.0,
    );
    line(
        "query one user, one day, 10M rows: p50 (ms)",
        p50,
        "<= 200",
        p50 <= 200.0,
    );
    println!("{:<52} {p99:>12.1}", "query p99 (ms)");
    line(
        "spool emit p99 (us, 20k ev/s)",
        spool_p99,
        "<= 5",
        spool_p99 <= 5.0,
    );
    println!(
        "\nbaseline, same rows and client straight into a scratch table (RowBinary, no check):"
    );
    println!(
        "  one INSERT of all rows {bulk:>10.0} rows/s   pipeline/baseline {:.2}",
        eps / bulk
    );
    println!(
        "  {:>5}-row INSERTs      {batched:>10.0} rows/s   pipeline/baseline {:.2}",
        options.batch_events,
        eps / batched
    );
    let cpu = &ingest["cpu_us_per_event"];
    println!(
        "CPU per event: collector {:.1} us, ClickHouse {:.1} us, agent spool reader + shipper {:.1} us",
        num(&cpu["collector"]),
        num(&cpu["clickhouse"]),
        num(&cpu["agent"])
    );
    json!({"ingest": ingest, "spool": spool})
}
