//! `gatehouse-agent` binary: parses arguments and runs the agent.

fn main() -> anyhow::Result<()> {
    Ok(())
}
