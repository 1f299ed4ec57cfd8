//! `cargo xtask build-ebpf`: builds `agent-ebpf` with the recipe in TOOLCHAIN.md.
//!
//! The rustup toolchain has no `rust-src` for `-Z build-std=core`, so the build uses
//! Debian's `/usr/bin/rustc` (named explicitly: rustup's proxy shadows it on `PATH`) with
//! `RUSTC_BOOTSTRAP=1`, and bpf-linker 0.13.0 as the linker. The object is copied to
//! `<target>/ebpf/gatehouse-ebpf.o`, where `agent/build.rs` embeds it from.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::util::{self, Paths, note, step};

/// Debian's compiler (rustc-web), with std sources for `-Z build-std`.
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
/// Where rust-web-src puts the std sources `-Z build-std=core` compiles.
const DEBIAN_RUST_SRC: &str = "/usr/lib/rustlib/src/rust/library";
/// The eBPF target (little-endian; the build machines are x86_64).
const TARGET: &str = "bpfel-unknown-none";
/// The binary name in `agent-ebpf/Cargo.toml`.
const BINARY: &str = "gatehouse-ebpf";

/// Which cargo profile of `agent-ebpf` to build.
#[derive(Clone, Copy)]
pub enum Profile {
    /// `[profile.dev]` (tuned like release: eBPF must be optimised to pass the verifier).
    Dev,
    /// `[profile.release]`: the verified recipe.
    Release,
}

impl Profile {
    /// `--release` given or not.
    pub fn from_flag(release: bool) -> Self {
        if release { Self::Release } else { Self::Dev }
    }

    /// Cargo's output directory name for the profile.
    fn dir(self) -> &'static str {
        match self {
            Self::Dev => "debug",
            Self::Release => "release",
        }
    }
}

/// Builds the object and returns where it was copied (`Paths::ebpf_object`).
pub fn build(paths: &Paths, profile: Profile) -> anyhow::Result<PathBuf> {
    step(&format!("build eBPF programs ({})", profile.dir()));
    check_toolchain()?;
    let crate_dir = paths.root.join("agent-ebpf");
    let target_dir = paths.ebpf_target_dir();
    let mut cargo = util::cargo();
    cargo
        .current_dir(&crate_dir)
        .env("RUSTC", DEBIAN_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", &target_dir);
    // Settings meant for the host build would break or change the eBPF one.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
    ] {
        cargo.env_remove(var);
    }
    cargo.args([
        "build",
        "--locked",
        "-Z",
        "build-std=core",
        "--target",
        TARGET,
    ]);
    if let Profile::Release = profile {
        cargo.arg("--release");
    }
    util::run(&mut cargo).context("building agent-ebpf")?;

    let built = target_dir.join(TARGET).join(profile.dir()).join(BINARY);
    let object = paths.ebpf_object();
    let bytes = fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    // Unchanged objects are not rewritten, so the agent is not rebuilt for nothing.
    if fs::read(&object).ok().as_deref() != Some(bytes.as_slice()) {
        fs::write(&object, &bytes).with_context(|| format!("writing {}", object.display()))?;
        note(format_args!(
            "updated {} ({} bytes)",
            object.display(),
            bytes.len()
        ));
    } else {
        note(format_args!("unchanged {}", object.display()));
    }
    Ok(object)
}

/// Fails naming the missing piece, before cargo fails less clearly.
fn check_toolchain() -> anyhow::Result<()> {
    if !PathBuf::from(DEBIAN_RUSTC).is_file() {
        bail!("{DEBIAN_RUSTC} missing (Debian package rustc-web): run `cargo xtask setup`");
    }
    if !PathBuf::from(DEBIAN_RUST_SRC).join("core").is_dir() {
        bail!("{DEBIAN_RUST_SRC} missing (Debian package rust-web-src): run `cargo xtask setup`");
    }
    if util::output_of(Command::new("bpf-linker").arg("--version")).is_none() {
        bail!(
            "bpf-linker not found on PATH: run `cargo xtask setup` (installs it into ~/.cargo/bin)"
        );
    }
    Ok(())
}
