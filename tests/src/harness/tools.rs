//! Locations of the external binaries tests drive, as `cargo xtask setup` installs them.
//!
//! Each can be overridden by an environment variable (set by `cargo xtask test`).

use std::path::PathBuf;

/// Directory `cargo xtask setup` installs tools into (`GATEHOUSE_TOOLS_DIR`, default
/// `$HOME/.cache/gatehouse/tools`).
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GATEHOUSE_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/gatehouse/tools")
}

fn tool(env: &str, default: PathBuf) -> Result<PathBuf, String> {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or(default);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found (set {env} or run `cargo xtask setup`)",
            path.display()
        ))
    }
}

/// kubectl 1.32 (`GATEHOUSE_KUBECTL_1_32`, default `/usr/bin/kubectl`).
pub fn kubectl_1_32() -> Result<PathBuf, String> {
    tool("GATEHOUSE_KUBECTL_1_32", PathBuf::from("/usr/bin/kubectl"))
}

/// Debian's kubectl 1.20, unpacked by setup (`GATEHOUSE_KUBECTL_1_20`).
pub fn kubectl_1_20() -> Result<PathBuf, String> {
    tool(
        "GATEHOUSE_KUBECTL_1_20",
        tools_dir().join("kubectl-1.20/usr/bin/kubectl"),
    )
}

/// moto's STS server in setup's venv (`GATEHOUSE_MOTO_SERVER`).
pub fn moto_server() -> Result<PathBuf, String> {
    tool(
        "GATEHOUSE_MOTO_SERVER",
        tools_dir().join("moto-venv/bin/moto_server"),
    )
}
