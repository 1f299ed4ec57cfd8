//! `cargo xtask lint`: formatting and clippy, as CI checks them.

use anyhow::Context as _;

use crate::util::{self, Paths, step};

/// `cargo fmt --check` (workspace and agent-ebpf), then clippy with warnings denied.
pub fn run(paths: &Paths) -> anyhow::Result<()> {
    step("lint: formatting");
    util::run(
        util::cargo()
            .current_dir(&paths.root)
            .args(["fmt", "--all", "--check"]),
    )
    .context("code is not formatted: run `cargo fmt --all`")?;
    util::run(util::cargo().current_dir(&paths.root).args([
        "fmt",
        "--check",
        "--manifest-path",
        "agent-ebpf/Cargo.toml",
    ]))
    .context(
        "agent-ebpf is not formatted: run `cargo fmt --manifest-path agent-ebpf/Cargo.toml`",
    )?;

    step("lint: clippy");
    util::run(
        util::cargo()
            .current_dir(&paths.root)
            // Same embedding input as the test build, so the agent is not rebuilt twice.
            .env("GATEHOUSE_EBPF_OBJECT", paths.ebpf_object())
            .args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
    )
    .context("clippy found problems (warnings are errors): fix them, then re-run")?;
    Ok(())
}
