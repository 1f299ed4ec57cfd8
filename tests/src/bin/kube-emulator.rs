//! `kube-emulator` binary.

fn main() -> anyhow::Result<()> {
    Ok(())
}
