//! Paths every task agrees on, and running commands so the user sees what runs.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The eBPF object's file name inside `<target>/ebpf/` (read by `agent/build.rs` too).
pub const EBPF_OBJECT_NAME: &str = "gatehouse-ebpf.o";

/// Where things live: the workspace, its build output and the installed tools.
pub struct Paths {
    /// Workspace root (the directory holding the top `Cargo.toml`).
    pub root: PathBuf,
    /// Cargo's target directory for the workspace (`CARGO_TARGET_DIR` or `<root>/target`).
    pub target_dir: PathBuf,
    /// Where setup installs tools (`GATEHOUSE_TOOLS_DIR`, `$HOME/.cache/gatehouse/tools`).
    pub tools_dir: PathBuf,
}

impl Paths {
    /// Finds the workspace from this crate's manifest dir and the target dir from cargo.
    pub fn discover(tools_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask's manifest dir has no parent")?
            .to_path_buf();
        let target_dir = target_dir(&root)?;
        let tools_dir = match tools_dir {
            Some(dir) => dir,
            None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
                .join(".cache/gatehouse/tools"),
        };
        Ok(Self {
            root,
            target_dir,
            tools_dir,
        })
    }

    /// Target dir of the eBPF build (kept apart: other target, other compiler).
    pub fn ebpf_target_dir(&self) -> PathBuf {
        self.target_dir.join("ebpf")
    }

    /// The object `build-ebpf` leaves for `agent/build.rs` (`GATEHOUSE_EBPF_OBJECT`).
    pub fn ebpf_object(&self) -> PathBuf {
        self.ebpf_target_dir().join(EBPF_OBJECT_NAME)
    }

    /// Debian's kubectl 1.20, unpacked by setup (`GATEHOUSE_KUBECTL_1_20`).
    pub fn kubectl_1_20(&self) -> PathBuf {
        self.tools_dir.join("kubectl-1.20/usr/bin/kubectl")
    }

    /// moto's server in setup's venv (`GATEHOUSE_MOTO_SERVER`).
    pub fn moto_server(&self) -> PathBuf {
        self.moto_venv().join("bin/moto_server")
    }

    /// The venv setup installs moto into.
    pub fn moto_venv(&self) -> PathBuf {
        self.tools_dir.join("moto-venv")
    }

    /// The venv setup installs `chdb-core` (an in-process current ClickHouse) into; the
    /// collector's modern-server DDL is checked on it, since Debian ships 18.16 only.
    pub fn chdb_venv(&self) -> PathBuf {
        self.tools_dir.join("chdb-venv")
    }

    /// The Python that can `import chdb`.
    pub fn chdb_python(&self) -> PathBuf {
        self.chdb_venv().join("bin/python3")
    }

    /// The environment every test and the dev stack get: where each tool is.
    pub fn test_env(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("GATEHOUSE_TOOLS_DIR", self.tools_dir.clone()),
            ("GATEHOUSE_KUBECTL_1_20", self.kubectl_1_20()),
            ("GATEHOUSE_KUBECTL_1_32", PathBuf::from(KUBECTL_1_32)),
            ("GATEHOUSE_MOTO_SERVER", self.moto_server()),
            ("GATEHOUSE_CHDB_PYTHON", self.chdb_python()),
            ("GATEHOUSE_EBPF_OBJECT", self.ebpf_object()),
            ("GATEHOUSE_BIN_DIR", self.target_dir.join("debug")),
        ]
    }
}

/// The preinstalled kubectl 1.32 (WebSocket exec by default).
pub const KUBECTL_1_32: &str = "/usr/bin/kubectl";

/// `cargo metadata`'s target directory: honours `CARGO_TARGET_DIR` and cargo config.
fn target_dir(root: &Path) -> anyhow::Result<PathBuf> {
    let output = cargo()
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .context("running cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("parsing cargo metadata")?;
    let dir = metadata["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?;
    Ok(PathBuf::from(dir))
}

/// The cargo that runs us (`$CARGO`), else `cargo` from `PATH`.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Prints a step heading.
pub fn step(title: &str) {
    println!("==> {title}");
}

/// Prints a detail line under the current step.
pub fn note(message: impl std::fmt::Display) {
    println!("    {message}");
}

/// Prints and runs `command`; fails with the command line when it does not succeed.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let line = describe(command);
    note(format_args!("$ {line}"));
    let status = command
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `command` quietly; its stdout when it succeeds, `None` when it fails or is missing.
pub fn output_of(command: &mut Command) -> Option<String> {
    let output = command.output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A command line as the user would type it (env overrides first).
pub fn describe(command: &Command) -> String {
    let quote = |s: &OsStr| {
        let s = s.to_string_lossy();
        if s.is_empty() || s.contains(|c: char| c.is_whitespace() || "'\"$*?[]{}|&;<>".contains(c))
        {
            format!("'{}'", s.replace('\'', r"'\''"))
        } else {
            s.into_owned()
        }
    };
    let mut parts: Vec<String> = command
        .get_envs()
        .filter_map(|(key, value)| {
            value.map(|value| format!("{}={}", key.to_string_lossy(), quote(value)))
        })
        .collect();
    parts.push(quote(command.get_program()));
    parts.extend(command.get_args().map(quote));
    parts.join(" ")
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
