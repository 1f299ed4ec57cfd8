//! Micro-benchmark of the audit spool's cost on the request path: the latency of
//! `Spool::emit` (clone + bounded-queue push) with the writer thread running (serialise,
//! CRC, append, batched fsync). Run by `cargo xtask bench spool`; prints p50/p99/p99.9/max
//! against the 5 µs p99 target and one JSON line.

use clap::Parser;
use gatehouse_agent::audit::sink::AuditSink;
use gatehouse_agent::spool::metrics::DropReason;
use gatehouse_agent::spool::{Spool, SpoolConfig, SpoolMetrics};
use gatehouse_common::audit::{ApiRequestEvent, AuditEvent, Decision};
use std::time::{Duration, Instant};

/// Measures `emit` on the spool.
#[derive(Parser)]
struct Args {
    /// Events to emit.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Emit rate (events per second, paced); 0 = as fast as possible (the queue then
    /// overflows and drops are reported).
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Spool directory (default: a fresh temp dir on the target's filesystem).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// fsync after this many records.
    #[arg(long, default_value_t = 256)]
    fsync_every: u64,
    /// ...or after this many milliseconds.
    #[arg(long, default_value_t = 20)]
    fsync_interval_ms: u64,
}

fn sample_event(i: usize) -> AuditEvent {
    AuditEvent::ApiRequest(ApiRequestEvent {
        event_id: format!("{:032x}", i as u128 * 0x9e37_79b9_7f4a_7c15),
        request_id: format!("req-{i}"),
        user: "oidc:alice@example.com".into(),
        groups: vec!["engineers".into(), "oncall".into()],
        method: "GET".into(),
        verb: "list".into(),
        path: "/api/v1/namespaces/dev/pods".into(),
        query: "limit=500".into(),
        namespace: "dev".into(),
        resource: "pods".into(),
        user_agent: "kubectl/v1.32.0 (linux/amd64) kubernetes/abcdef".into(),
        decision: Decision::Allow,
        status_code: 200,
        latency_ms: 1.25,
        ..ApiRequestEvent::default()
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let temp = tempfile::tempdir_in(std::env::temp_dir())?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().join("spool"));
    let metrics = SpoolMetrics::default();
    let spool = Spool::open(
        SpoolConfig {
            fsync_every: args.fsync_every,
            fsync_interval: Duration::from_millis(args.fsync_interval_ms),
            ..SpoolConfig::new(&dir)
        },
        metrics.clone(),
    )?;
    // Events are built before timing: the request path has its event already.
    let events: Vec<AuditEvent> = (0..1024).map(sample_event).collect();
    let mut samples: Vec<u32> = Vec::with_capacity(args.events);
    let gap = Duration::from_nanos(1_000_000_000u64.checked_div(args.rate).unwrap_or(0));
    let started = Instant::now();
    let mut next = started;
    for i in 0..args.events {
        if !gap.is_zero() {
            while Instant::now() < next {
                std::hint::spin_loop();
            }
            next += gap;
        }
        let event = &events[i % events.len()];
        let t = Instant::now();
        spool.emit(event);
        samples.push(u32::try_from(t.elapsed().as_nanos()).unwrap_or(u32::MAX));
    }
    let emitted_in = started.elapsed();
    let flushed = spool.flush(Duration::from_secs(120));
    let drained_in = started.elapsed();
    samples.sort_unstable();
    let pct = |p: f64| {
        let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
        f64::from(samples[idx.min(samples.len() - 1)]) / 1000.0
    };
    let dropped: u64 = ["spool_full", "queue_full", "io_error"]
        .iter()
        .map(|r| {
            metrics
                .dropped
                .get_or_create(&DropReason {
                    reason: (*r).to_string(),
                })
                .get()
        })
        .sum();
    let (p50, p99, p999, max) = (pct(0.50), pct(0.99), pct(0.999), pct(1.0));
    println!(
        "spool emit latency over {} events at {} ev/s (writer running):",
        args.events, args.rate
    );
    println!("  p50    {p50:8.3} us");
    println!(
        "  p99    {p99:8.3} us   target <= 5 us: {}",
        if p99 <= 5.0 { "PASS" } else { "MISS" }
    );
    println!("  p99.9  {p999:8.3} us");
    println!("  max    {max:8.3} us");
    println!(
        "  appended {} dropped {dropped} ; emit phase {:.2}s, durable after {:.2}s (flush ok: {flushed})",
        metrics.appended.get(),
        emitted_in.as_secs_f64(),
        drained_in.as_secs_f64()
    );
    println!("  spool bytes on disk {}", spool.disk_bytes());
    println!(
        "{}",
        serde_json::json!({"bench": "spool_emit", "events": args.events, "rate": args.rate,
            "p50_us": p50, "p99_us": p99, "p99.9_us": p999, "max_us": max,
            "appended": metrics.appended.get(), "dropped": dropped,
            "emit_seconds": emitted_in.as_secs_f64(), "durable_seconds": drained_in.as_secs_f64()})
    );
    spool.close();
    Ok(())
}
