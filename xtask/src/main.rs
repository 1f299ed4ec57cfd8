//! `cargo xtask`: setup, eBPF build, the local dev stack and the full test run.

fn main() -> anyhow::Result<()> {
    Ok(())
}
