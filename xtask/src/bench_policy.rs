//! `cargo xtask bench policy`: policy evaluation cost per request with 1,000 rules
//! (p50/p99, target p99 <= 5 us), via the release `policy_bench` example of the common
//! crate. Writes the JSON result to `<target>/bench/policy-<unix-seconds>.json`. The
//! criterion version of the same measurement is `cargo bench -p gatehouse-common
//! --features policy --bench policy_eval`.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use crate::util::{self, Paths};

/// Knobs of `cargo xtask bench policy`.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyOptions {
    /// Rules in the synthetic policy.
    #[arg(long, default_value_t = 1000)]
    pub rules: usize,
    /// Timed samples (each a batch of 32 evaluations).
    #[arg(long, default_value_t = 200_000)]
    pub samples: usize,
}

/// Builds and runs the bench, prints its table and keeps its JSON line.
pub fn policy(paths: &Paths, options: &PolicyOptions) -> anyhow::Result<()> {
    util::step("policy evaluation micro-benchmark (release)");
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
            "policy",
            "--example",
            "policy_bench",
            "--",
        ])
        .arg(format!("--rules={}", options.rules))
        .arg(format!("--samples={}", options.samples));
    util::note(format_args!("$ {}", util::describe(&command)));
    let output = command.output().context("running the policy bench")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    anyhow::ensure!(
        output.status.success(),
        "policy bench failed ({})",
        output.status
    );
    if let Some(json) = stdout.lines().rev().find(|l| l.starts_with('{')) {
        let value: serde_json::Value =
            serde_json::from_str(json).context("parsing the policy bench's JSON")?;
        let dir = paths.target_dir.join("bench");
        std::fs::create_dir_all(&dir)?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let file = dir.join(format!("policy-{secs}.json"));
        std::fs::write(&file, value.to_string())?;
        util::note(format_args!("result: {}", file.display()));
    }
    Ok(())
}
