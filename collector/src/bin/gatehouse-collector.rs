//! `gatehouse-collector` binary.

fn main() -> anyhow::Result<()> {
    Ok(())
}
