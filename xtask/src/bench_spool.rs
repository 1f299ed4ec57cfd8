//! `cargo xtask bench spool`: the audit spool's cost on the request path (p50/p99 of
//! `emit` over 1M events with the writer running), via the release `spool_bench` example
//! of the agent. Writes the JSON result to `<target>/bench/spool-<unix-seconds>.json`.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use crate::util::{self, Paths};

/// Knobs of `cargo xtask bench spool`.
#[derive(Debug, Clone, clap::Args)]
pub struct SpoolOptions {
    /// Events to emit.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Paced emit rate in events per second (0 = unpaced: shows queue overflow).
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
}

/// Builds and runs the bench, prints its table and keeps its JSON line.
pub fn spool(paths: &Paths, options: &SpoolOptions) -> anyhow::Result<()> {
    if let Some(json) = run(paths, options)? {
        let dir = paths.target_dir.join("bench");
        std::fs::create_dir_all(&dir)?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let file = dir.join(format!("spool-{secs}.json"));
        std::fs::write(&file, json.to_string())?;
        util::note(format_args!("result: {}", file.display()));
    }
    Ok(())
}

/// Builds and runs the bench and prints its table; returns its JSON result (`bench
/// ingest` reports the spool's p99 from it).
pub fn run(paths: &Paths, options: &SpoolOptions) -> anyhow::Result<Option<serde_json::Value>> {
    util::step("spool emit micro-benchmark (release)");
    let mut command = util::cargo();
    command
        .current_dir(&paths.root)
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "gatehouse-agent",
            "--example",
            "spool_bench",
            "--",
        ])
        .arg(format!("--events={}", options.events))
        .arg(format!("--rate={}", options.rate));
    util::note(format_args!("$ {}", util::describe(&command)));
    let output = command.output().context("running the spool bench")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    anyhow::ensure!(
        output.status.success(),
        "spool bench failed ({})",
        output.status
    );
    match stdout.lines().rev().find(|l| l.starts_with('{')) {
        Some(json) => Ok(Some(
            serde_json::from_str(json).context("parsing the spool bench's JSON")?,
        )),
        None => Ok(None),
    }
}
