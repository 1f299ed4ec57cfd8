//! `gatehouse` user CLI.

fn main() -> anyhow::Result<()> {
    Ok(())
}
