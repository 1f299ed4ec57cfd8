//! `cargo xtask bench exec`: exec output throughput through the release agent with session
//! recording on vs straight to the emulator, and the agent's RSS growth, via the release
//! `exec_bench` example. Writes the JSON result to `<target>/bench/exec-<unix-seconds>.json`.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};

use crate::util::{self, Paths};

/// Knobs of `cargo xtask bench exec`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecOptions {
    /// Bytes the container writes per run (default 1 GiB).
    #[arg(long, default_value_t = 1 << 30)]
    pub bytes: u64,
    /// Runs of each path (alternating; the best of each is reported).
    #[arg(long, default_value_t = 2)]
    pub runs: usize,
}

/// Builds the release agent, collector and driver, runs it, keeps its JSON line.
pub fn exec(paths: &Paths, options: &ExecOptions) -> anyhow::Result<()> {
    util::step("building the release agent, collector and the exec_bench driver");
    // One invocation: two would resolve features differently and rebuild shared crates.
    let status = util::cargo()
        .args([
            "build",
            "--release",
            "-p",
            "gatehouse-agent",
            "--bin",
            "gatehouse-agent",
        ])
        .args(["-p", "gatehouse-collector", "--bin", "gatehouse-collector"])
        .args(["-p", "gatehouse-tests", "--example", "exec_bench"])
        .current_dir(&paths.root)
        .status()
        .context("running cargo build --release")?;
    if !status.success() {
        bail!("cargo build --release (agent, collector, exec_bench) failed");
    }
    util::step("kubectl exec output: agent + recording vs direct (release)");
    let release = paths.target_dir.join("release");
    let mut command = std::process::Command::new(release.join("examples/exec_bench"));
    command
        .arg("--bin-dir")
        .arg(&release)
        .arg(format!("--bytes={}", options.bytes))
        .arg(format!("--runs={}", options.runs));
    util::note(format_args!("$ {}", util::describe(&command)));
    let output = command.output().context("running exec_bench")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        bail!("exec bench failed ({})", output.status);
    }
    if let Some(json) = stdout.lines().rev().find(|l| l.starts_with('{')) {
        let dir = paths.target_dir.join("bench");
        std::fs::create_dir_all(&dir)?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let file = dir.join(format!("exec-{secs}.json"));
        std::fs::write(&file, json)?;
        util::note(format_args!("result: {}", file.display()));
    }
    Ok(())
}
