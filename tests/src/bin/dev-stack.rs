//! `dev-stack` binary: the local stack behind `cargo xtask dev`.

fn main() -> anyhow::Result<()> {
    Ok(())
}
