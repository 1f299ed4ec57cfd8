//! `cargo xtask setup`: installs every tool the build and the tests need.
//!
//! Idempotent: each step checks first and skips what is present. Steps that need root are
//! collected when running without it and named in the final error; the others still run.

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::util::{self, KUBECTL_1_32, Paths, note, step};

/// Debian packages: Debian's rustc + std sources and LLVM 22 for the eBPF build
/// (TOOLCHAIN.md), ClickHouse for the storage tests, bpftool for inspecting programs.
const APT_PACKAGES: &[&str] = &[
    "rustc-web",
    "rust-web-src",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "clickhouse-server",
    "clickhouse-client",
    "bpftool",
];

/// bpf-linker release built against LLVM 22 (newer ones need a newer rustc).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// cargo-nextest version the machines ship; pinned so `--locked` builds on rustc 1.95.
const NEXTEST_VERSION: &str = "0.9.143";

/// Where the kernel's tracing filesystem is expected (aya attaches tracepoints through it).
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Runs every step; fails at the end naming what could not be done.
pub fn run(paths: &Paths) -> anyhow::Result<()> {
    let mut setup = Setup {
        root: util::is_root(),
        apt_updated: false,
        needs_root: Vec::new(),
    };
    setup.apt_packages()?;
    setup.kubectl_1_20(paths)?;
    setup.kubectl_1_32()?;
    setup.bpf_linker()?;
    setup.nextest()?;
    setup.moto(paths)?;
    setup.chdb(paths)?;
    setup.tracefs()?;
    if !setup.needs_root.is_empty() {
        bail!(
            "setup incomplete: these steps need root (re-run `cargo xtask setup` as root):\n  - {}",
            setup.needs_root.join("\n  - ")
        );
    }
    step("setup complete");
    Ok(())
}

struct Setup {
    root: bool,
    apt_updated: bool,
    needs_root: Vec<String>,
}

impl Setup {
    fn apt_update(&mut self) -> anyhow::Result<()> {
        if !self.apt_updated {
            util::run(apt_get().arg("update"))?;
            self.apt_updated = true;
        }
        Ok(())
    }

    fn apt_packages(&mut self) -> anyhow::Result<()> {
        step("Debian packages");
        let missing: Vec<&str> = APT_PACKAGES
            .iter()
            .copied()
            .filter(|package| !dpkg_installed(package))
            .collect();
        if missing.is_empty() {
            note(format_args!("present: {}", APT_PACKAGES.join(" ")));
            return Ok(());
        }
        note(format_args!("missing: {}", missing.join(" ")));
        if !self.root {
            self.needs_root
                .push(format!("apt-get install -y {}", missing.join(" ")));
            return Ok(());
        }
        self.apt_update()?;
        util::run(apt_get().args(["install", "-y"]).args(&missing))
            .context("installing Debian packages")?;
        Ok(())
    }

    /// Debian's kubectl 1.20 conflicts with the preinstalled 1.32 package, so it is
    /// downloaded and unpacked into the tools dir instead of installed.
    fn kubectl_1_20(&mut self, paths: &Paths) -> anyhow::Result<()> {
        step("kubectl 1.20 (SPDY client)");
        let kubectl = paths.kubectl_1_20();
        if let Some(version) = kubectl_version(&kubectl)
            && version.contains("v1.20.")
        {
            note(format_args!("present: {} ({version})", kubectl.display()));
            return Ok(());
        }
        let unpack_dir = paths.tools_dir.join("kubectl-1.20");
        let download_dir = paths
            .tools_dir
            .join(format!(".download-{}", std::process::id()));
        fs::create_dir_all(&download_dir)
            .with_context(|| format!("creating {}", download_dir.display()))?;
        let result = (|| -> anyhow::Result<()> {
            if self.root {
                self.apt_update()?;
            }
            util::run(
                apt_get()
                    .args(["download", "kubernetes-client"])
                    .current_dir(&download_dir),
            )
            .context("downloading Debian's kubernetes-client (run as root once for `apt-get update` if the package is not found)")?;
            let deb = fs::read_dir(&download_dir)?
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
                .context("apt-get download left no .deb")?;
            util::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpack_dir))
        })();
        // Best effort: a leftover download dir is harmless and named in the output.
        let _ = fs::remove_dir_all(&download_dir);
        result?;
        let version = kubectl_version(&kubectl)
            .with_context(|| format!("{} does not run after unpacking", kubectl.display()))?;
        note(format_args!("installed: {} ({version})", kubectl.display()));
        Ok(())
    }

    fn kubectl_1_32(&mut self) -> anyhow::Result<()> {
        step("kubectl 1.32 (preinstalled)");
        match kubectl_version(Path::new(KUBECTL_1_32)) {
            Some(version) => {
                note(format_args!("present: {KUBECTL_1_32} ({version})"));
                Ok(())
            }
            None => bail!(
                "{KUBECTL_1_32} is missing or does not run: the build machines ship kubectl 1.32 \
                 there; install it (a kubectl >= 1.30 binary) before running the tests"
            ),
        }
    }

    fn bpf_linker(&mut self) -> anyhow::Result<()> {
        step(&format!("bpf-linker {BPF_LINKER_VERSION}"));
        let current = util::output_of(Command::new("bpf-linker").arg("--version"));
        if let Some(version) = &current
            && version
                .split_whitespace()
                .any(|word| word == BPF_LINKER_VERSION)
        {
            note(format_args!("present: {}", version.trim()));
            return Ok(());
        }
        if let Some(version) = current {
            note(format_args!(
                "found {}, want {BPF_LINKER_VERSION}",
                version.trim()
            ));
        }
        if !Path::new("/usr/lib/llvm-22/lib").is_dir() {
            bail!(
                "bpf-linker needs llvm-22-dev (/usr/lib/llvm-22): install the Debian packages first"
            );
        }
        note("building from crates.io (about 5 minutes)");
        util::run(
            util::cargo()
                .env("LLVM_PREFIX", "/usr/lib/llvm-22")
                .env("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22")
                // Its own temporary target dir: not mixed into the workspace's.
                .env_remove("CARGO_TARGET_DIR")
                .args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}")])
                .args(["--no-default-features", "--features", "llvm-22"]),
        )
        .context("installing bpf-linker")?;
        Ok(())
    }

    fn nextest(&mut self) -> anyhow::Result<()> {
        step("cargo-nextest");
        if let Some(version) = util::output_of(util::cargo().args(["nextest", "--version"])) {
            note(format_args!(
                "present: {}",
                version.lines().next().unwrap_or_default()
            ));
            return Ok(());
        }
        util::run(util::cargo().env_remove("CARGO_TARGET_DIR").args([
            "install",
            "--locked",
            &format!("cargo-nextest@{NEXTEST_VERSION}"),
        ]))
        .context("installing cargo-nextest")
    }

    /// moto's STS server, in its own venv so it does not depend on the machine's Python
    /// packages (and does not change them).
    fn moto(&mut self, paths: &Paths) -> anyhow::Result<()> {
        step("moto server (STS emulator)");
        let server = paths.moto_server();
        let venv = paths.moto_venv();
        if server.is_file() {
            note(format_args!("present: {}", server.display()));
            return Ok(());
        }
        fs::create_dir_all(&paths.tools_dir)
            .with_context(|| format!("creating {}", paths.tools_dir.display()))?;
        util::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            .context("creating the moto venv (Debian's python3 needs the python3-venv package)")?;
        util::run(Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "moto[server]",
        ]))
        .context("installing moto[server]")?;
        if !server.is_file() {
            bail!("{} missing after pip install", server.display());
        }
        note(format_args!("installed: {}", server.display()));
        Ok(())
    }

    /// chdb-core (a current ClickHouse engine as a Python module), in its own venv, for the
    /// test that checks the collector's DDL for new ClickHouse servers.
    fn chdb(&mut self, paths: &Paths) -> anyhow::Result<()> {
        step("chdb (current ClickHouse engine, for the collector's modern DDL test)");
        let python = paths.chdb_python();
        let venv = paths.chdb_venv();
        let importable = |python: &Path| {
            Command::new(python)
                .args(["-c", "import chdb"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        if importable(&python) {
            note(format_args!("present: {}", venv.display()));
            return Ok(());
        }
        fs::create_dir_all(&paths.tools_dir)
            .with_context(|| format!("creating {}", paths.tools_dir.display()))?;
        util::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            .context("creating the chdb venv (Debian's python3 needs the python3-venv package)")?;
        util::run(Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "chdb-core",
        ]))
        .context("installing chdb-core")?;
        if !importable(&python) {
            bail!("{} cannot import chdb after pip install", python.display());
        }
        note(format_args!("installed: {}", venv.display()));
        Ok(())
    }

    fn tracefs(&mut self) -> anyhow::Result<()> {
        step("tracefs");
        if tracefs_mounted() {
            note(format_args!("mounted at {TRACEFS}"));
            return Ok(());
        }
        if !self.root {
            // Only the kernel tests need it, and `cargo xtask test` skips those (loudly)
            // without root anyway: not a reason to fail setup.
            note(format_args!(
                "not mounted; needs root: mount -t tracefs nodev {TRACEFS} (kernel tests will be skipped)"
            ));
            return Ok(());
        }
        util::run(Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS]))
            .context("mounting tracefs (eBPF tracepoints attach through it)")
    }
}

/// Whether tracefs is usable at [`TRACEFS`] (its `events/` only exists when mounted).
pub fn tracefs_mounted() -> bool {
    Path::new(TRACEFS).join("events").is_dir()
}

fn apt_get() -> Command {
    let mut command = Command::new("apt-get");
    command.env("DEBIAN_FRONTEND", "noninteractive");
    command
}

fn dpkg_installed(package: &str) -> bool {
    util::output_of(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|status| status.trim() == "install ok installed")
}

/// `kubectl version --client` as one short line, `None` when it does not run.
fn kubectl_version(kubectl: &Path) -> Option<String> {
    if !kubectl.is_file() {
        return None;
    }
    let output = util::output_of(Command::new(kubectl).args(["version", "--client"]))?;
    // 1.20 prints `version.Info{... GitVersion:"v1.20.2", ...}`, 1.32 `Client Version: v1.32.4`.
    output
        .split(|c: char| c.is_whitespace() || c == '"' || c == ',')
        .find(|word| word.starts_with("v1."))
        .map(str::to_owned)
}
