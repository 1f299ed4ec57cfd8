//! kubelet-named cgroup v2 directories: create, move a child in before it execs, kill
//! everything inside (`cgroup.kill`), remove.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `<root>/kubepods.slice/kubepods-pod<uid, '-' → '_'>.slice`, as the systemd cgroup
/// driver names a BestEffort-less pod slice.
pub fn pod_slice(root: &Path, pod_uid: &str) -> PathBuf {
    root.join("kubepods.slice")
        .join(format!("kubepods-pod{}.slice", pod_uid.replace('-', "_")))
}

/// `<pod slice>/cri-containerd-<container_id>.scope`.
pub fn container_scope(root: &Path, pod_uid: &str, container_id: &str) -> PathBuf {
    pod_slice(root, pod_uid).join(format!("cri-containerd-{container_id}.scope"))
}

/// Checks that `root` can host child cgroups: it (or its parent) is on cgroup2 and writable.
pub fn usable_root(root: &Path) -> io::Result<()> {
    std::fs::create_dir_all(root)?;
    // A plain directory (not cgroupfs) has no cgroup.procs: refuse it, or children
    // would "run in a cgroup" that the kernel knows nothing about.
    let procs = root.join("cgroup.procs");
    std::fs::OpenOptions::new().write(true).open(&procs)?;
    Ok(())
}

/// The cgroup.procs path of `dir`, prepared before fork so the child only calls
/// async-signal-safe functions.
#[derive(Debug, Clone)]
pub struct ProcsFile(CString);

impl ProcsFile {
    /// For the cgroup directory `dir`.
    pub fn new(dir: &Path) -> io::Result<Self> {
        CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
            .map(Self)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in cgroup path"))
    }

    /// Moves the calling process into the cgroup. Only for `pre_exec`: uses raw
    /// open/write/close and a stack buffer (no allocation after fork).
    pub fn join_self(&self) -> io::Result<()> {
        let mut digits = [0u8; 20];
        let mut n = std::process::id();
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        // SAFETY: the path is a valid NUL-terminated string owned by self; the buffer
        // slice is in bounds; the fd is closed on every path.
        unsafe {
            let fd = libc::open(self.0.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let len = digits.len() - i;
            let wrote = libc::write(fd, digits[i..].as_ptr().cast(), len);
            let err = io::Error::last_os_error();
            libc::close(fd);
            if wrote != len as isize {
                return Err(err);
            }
        }
        Ok(())
    }
}

/// Kills every process in `dir` (SIGKILL via `cgroup.kill`, kernel ≥ 5.14).
pub fn kill_all(dir: &Path) -> io::Result<()> {
    std::fs::write(dir.join("cgroup.kill"), "1")
}

/// True while any process is still in `dir`.
pub fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| !s.trim().is_empty())
        .unwrap_or(false)
}

/// Kills the cgroup's processes, waits (up to `timeout`) until it is empty and removes the
/// directory. Missing directories are fine.
pub fn kill_and_remove(dir: &Path, timeout: Duration) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if let Err(e) = kill_all(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cgroup.kill failed");
    }
    let deadline = Instant::now() + timeout;
    while populated(dir) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    remove_tree(dir)
}

/// Removes `dir` and its child cgroups, deepest first (cgroupfs allows only rmdir).
pub fn remove_tree(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The cgroup v2 id of `dir`: the inode number, as `bpf_get_current_cgroup_id()` reports.
pub fn cgroup_id(dir: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(dir)?.ino())
}
