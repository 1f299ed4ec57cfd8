//! `cargo xtask test`: lint, setup, eBPF build, then one nextest run over the workspace.
//!
//! Kernel tests are `#[ignore]`d (they need root and a capable kernel); they are included
//! with `--run-ignored all` exactly when [`kernel_tests_blocker`] finds nothing missing, and
//! otherwise a banner says why they did not run: never a silent pass.

use std::{
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use anyhow::bail;

use crate::{
    ebpf, lint, setup,
    util::{self, Paths, step},
};

/// Root of the cgroup v2 hierarchy on the build machines (v1 controllers are elsewhere).
const CGROUP2_ROOT: &str = "/sys/fs/cgroup/unified";
/// Kernel BTF, needed for CO-RE relocations.
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Runs the whole sequence; fails when any part does.
pub fn run(paths: &Paths, skip_lint: bool, nextest_args: &[String]) -> anyhow::Result<()> {
    if skip_lint {
        step("lint: skipped (--skip-lint)");
    } else {
        lint::run(paths)?;
    }
    setup::run(paths)?;
    // `paths.test_env()` points GATEHOUSE_EBPF_OBJECT at the object for the agent build.
    ebpf::build(paths, ebpf::Profile::Release)?;

    step("kernel test capabilities");
    let blocker = kernel_tests_blocker();
    if let Some(reason) = &blocker {
        banner(&format!("KERNEL TESTS SKIPPED: {reason}"));
    } else {
        util::note("root, BTF, bpf(), tracefs and cgroup v2 available: running kernel tests");
    }

    // The end-to-end tests start the real agent and collector binaries, which nextest
    // does not build for another package's tests.
    step("binaries for the end-to-end tests");
    let mut build = util::cargo();
    build
        .current_dir(&paths.root)
        .args(["build", "--workspace", "--bins"]);
    for (key, value) in paths.test_env() {
        build.env(key, value);
    }
    util::run(&mut build)?;

    step("tests");
    let mut nextest = util::cargo();
    nextest
        .current_dir(&paths.root)
        .args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    if blocker.is_none() {
        nextest.args(["--run-ignored", "all"]);
    }
    nextest.args(nextest_args);
    for (key, value) in paths.test_env() {
        nextest.env(key, value);
    }
    let result = util::run(&mut nextest);
    if let Some(reason) = &blocker {
        // Repeated after the summary, where a reader of the log looks.
        banner(&format!("KERNEL TESTS SKIPPED: {reason}"));
    }
    if result.is_err() {
        bail!("tests failed (see the nextest summary above)");
    }
    Ok(())
}

fn banner(message: &str) {
    let rule = "!".repeat(message.len() + 8);
    println!("\n{rule}\n!!! {message} !!!\n{rule}\n");
}

/// Why the kernel tests cannot run here, or `None` when they can.
pub fn kernel_tests_blocker() -> Option<String> {
    if !util::is_root() {
        return Some("not running as root (eBPF loading and cgroups need it)".into());
    }
    if !Path::new(VMLINUX_BTF).is_file() {
        return Some(format!("{VMLINUX_BTF} missing (kernel without BTF)"));
    }
    if let Err(error) = bpf_usable() {
        return Some(format!("bpf() unusable: {error}"));
    }
    if !setup::tracefs_mounted() {
        return Some(format!(
            "tracefs not mounted at {} (cargo xtask setup mounts it as root)",
            setup::TRACEFS
        ));
    }
    if let Err(error) = cgroup2_writable() {
        return Some(format!("cgroup v2 at {CGROUP2_ROOT} not usable: {error}"));
    }
    None
}

/// Creates (and closes) a one-entry array map: the cheapest proof that bpf() works.
fn bpf_usable() -> std::io::Result<()> {
    /// The `BPF_MAP_CREATE` prefix of `union bpf_attr`; the kernel zero-fills the rest.
    #[repr(C)]
    struct MapCreateAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        map_flags: 0,
    };
    // SAFETY: `attr` is a valid, initialised prefix of `union bpf_attr` of the given size,
    // alive for the duration of the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &attr as *const MapCreateAttr,
            size_of::<MapCreateAttr>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is the map fd we just created and own.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// Checks that [`CGROUP2_ROOT`] is a cgroup v2 mount where we can create and remove children.
fn cgroup2_writable() -> anyhow::Result<()> {
    const CGROUP2_SUPER_MAGIC: libc::c_long = 0x6367_7270;
    let root = CString::new(Path::new(CGROUP2_ROOT).as_os_str().as_bytes())?;
    // SAFETY: `statfs` is plain data; zeroed is a valid initial value.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `root` is a NUL-terminated path and `stat` a valid out-pointer.
    if unsafe { libc::statfs(root.as_ptr(), &mut stat) } != 0 {
        bail!(std::io::Error::last_os_error());
    }
    if stat.f_type != CGROUP2_SUPER_MAGIC {
        bail!("not a cgroup2 mount");
    }
    let probe =
        PathBuf::from(CGROUP2_ROOT).join(format!("gatehouse-xtask-probe-{}", std::process::id()));
    fs::create_dir(&probe).map_err(|e| anyhow::anyhow!("mkdir {}: {e}", probe.display()))?;
    fs::remove_dir(&probe).map_err(|e| anyhow::anyhow!("rmdir {}: {e}", probe.display()))?;
    Ok(())
}
