//! Embeds the eBPF object built by `cargo xtask build-ebpf` into the agent.
//!
//! The object is copied to `$OUT_DIR/gatehouse-ebpf.o`, which `src/ebpf/object.rs` includes.
//! It is looked up at `$GATEHOUSE_EBPF_OBJECT` (set by xtask), else at
//! `<target dir>/ebpf/gatehouse-ebpf.o`. When it is missing (a machine without the eBPF
//! toolchain, a plain `cargo clippy`), an empty object is embedded and
//! `KernelProbes::load` fails with an error saying how to build it: the agent never runs
//! without its probes while pretending otherwise.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

/// Name of the object file inside `<target dir>/ebpf/` and inside `OUT_DIR`.
const OBJECT_NAME: &str = "gatehouse-ebpf.o";

fn main() {
    if let Err(message) = run() {
        // A build script can only fail loudly; there is no caller to return to.
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=GATEHOUSE_EBPF_OBJECT");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let source = match env::var_os("GATEHOUSE_EBPF_OBJECT") {
        Some(path) => PathBuf::from(path),
        None => default_object(&out_dir),
    };
    // Also reruns on every build while the file is missing, so the first build after
    // `cargo xtask build-ebpf` picks the object up.
    println!("cargo:rerun-if-changed={}", source.display());

    let dest = out_dir.join(OBJECT_NAME);
    if source.is_file() {
        fs::copy(&source, &dest)
            .map_err(|e| format!("copying {} to {}: {e}", source.display(), dest.display()))?;
    } else {
        fs::write(&dest, []).map_err(|e| format!("writing {}: {e}", dest.display()))?;
        println!(
            "cargo:warning=eBPF object not found at {}: the agent is built without its probes \
             (run `cargo xtask build-ebpf` first)",
            source.display()
        );
    }
    println!(
        "cargo:rustc-env=GATEHOUSE_EBPF_OBJECT_SOURCE={}",
        source.display()
    );
    Ok(())
}

/// `<target dir>/ebpf/gatehouse-ebpf.o`, where `cargo xtask build-ebpf` leaves it.
///
/// `OUT_DIR` is `<target dir>[/<triple>]/<profile>/build/<pkg>-<hash>/out`, so the target
/// dir is one of its ancestors; the first one holding the object wins. Without one, the
/// expected location is reported from `CARGO_TARGET_DIR` or the workspace's `target/`.
fn default_object(out_dir: &Path) -> PathBuf {
    let relative = Path::new("ebpf").join(OBJECT_NAME);
    if let Some(found) = out_dir
        .ancestors()
        .map(|dir| dir.join(&relative))
        .find(|candidate| candidate.is_file())
    {
        return found;
    }
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            env::var_os("CARGO_MANIFEST_DIR").map(|dir| PathBuf::from(dir).join("../target"))
        })
        .unwrap_or_else(|| PathBuf::from("target"));
    target_dir.join(relative)
}
