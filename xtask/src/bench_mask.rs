//! `cargo xtask bench mask`: the masking engine's cost — a 5,000-item SecretList masked vs
//! only parsed and re-serialised (same run), and the text masker's throughput — via the
//! release `mask_bench` example of gatehouse-common. Writes the JSON result to
//! `<target>/bench/mask-<unix-seconds>.json`.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use crate::util::{self, Paths};

/// Knobs of `cargo xtask bench mask`.
#[derive(Debug, Clone, clap::Args)]
pub struct MaskOptions {
    /// Rounds of the SecretList masking (p50/p95 over them).
    #[arg(long, default_value_t = 30)]
    pub rounds: usize,
    /// MiB of log text for the text masker's throughput.
    #[arg(long, default_value_t = 64)]
    pub text_mib: usize,
}

/// Builds and runs the bench, prints its table and keeps its JSON line.
pub fn mask(paths: &Paths, options: &MaskOptions) -> anyhow::Result<()> {
    util::step("masking engine micro-benchmark (release)");
    let mut command = util::cargo();
    command
        .current_dir(&paths.root)
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "gatehouse-common",
            "--features",
            "mask",
            "--example",
            "mask_bench",
            "--",
        ])
        .arg(format!("--rounds={}", options.rounds))
        .arg(format!("--text-mib={}", options.text_mib));
    util::note(format_args!("$ {}", util::describe(&command)));
    let output = command.output().context("running the mask bench")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    anyhow::ensure!(
        output.status.success(),
        "mask bench failed ({})",
        output.status
    );
    if let Some(json) = stdout.lines().rev().find(|l| l.starts_with('{')) {
        let dir = paths.target_dir.join("bench");
        std::fs::create_dir_all(&dir)?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let file = dir.join(format!("mask-{secs}.json"));
        std::fs::write(&file, json)?;
        util::note(format_args!("result: {}", file.display()));
    }
    Ok(())
}
