//! Kernel tests: the real eBPF programs, loaded into the running kernel.
//!
//! One module per probe. They need root, BTF, a mounted tracefs and a writable cgroup v2
//! hierarchy at `/sys/fs/cgroup/unified`, so they are ignored by default; `cargo xtask test`
//! checks those and runs them with `--run-ignored all` (or says loudly why it did not).

/// A fresh cgroup v2 directory, removed on drop (also when a test fails).
struct TestCgroup {
    path: std::path::PathBuf,
}

/// Root of the cgroup v2 hierarchy on the build machines (see TOOLCHAIN.md).
const CGROUP2_ROOT: &str = "/sys/fs/cgroup/unified";

impl TestCgroup {
    fn create(label: &str) -> std::io::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!("gatehouse-test-{label}-{}-{nanos}", std::process::id());
        let path = std::path::Path::new(CGROUP2_ROOT).join(name);
        std::fs::create_dir(&path)?;
        Ok(Self { path })
    }

    /// The cgroup v2 id `bpf_get_current_cgroup_id()` reports: the directory's inode.
    fn id(&self) -> std::io::Result<u64> {
        use std::os::unix::fs::MetadataExt as _;
        Ok(std::fs::metadata(&self.path)?.ino())
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // The last member may still be finishing its exit after `wait`: retry briefly.
        for _ in 0..50 {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
        eprintln!(
            "warning: could not remove test cgroup {}",
            self.path.display()
        );
    }
}

mod process_exec {
    use std::{fs::OpenOptions, os::fd::AsRawFd as _, time::Duration};

    use anyhow::Context as _;
    use gatehouse_agent::ebpf::{KernelEvent, KernelProbes, comm_lossy};
    use gatehouse_common::kernel::ProcessExecEvent;

    use super::TestCgroup;

    /// How long the exec event may take to arrive; generous for a loaded 2-core CI machine.
    const EVENT_DEADLINE: Duration = Duration::from_secs(10);

    #[tokio::test]
    #[ignore = "needs root and eBPF; run by cargo xtask test"]
    async fn reports_pid_and_cgroup_of_an_exec() -> anyhow::Result<()> {
        let mut probes = KernelProbes::load().context("loading the eBPF probes")?;
        let cgroup = TestCgroup::create("exec").context("creating a cgroup v2 child")?;
        let cgroup_id = cgroup.id()?;

        // Opened here, written in the child between fork and exec: writing "0" to
        // cgroup.procs moves the writer itself, so the exec happens inside the cgroup.
        let procs = OpenOptions::new()
            .write(true)
            .open(cgroup.path.join("cgroup.procs"))
            .context("opening cgroup.procs")?;
        let procs_fd = procs.as_raw_fd();
        let mut command = tokio::process::Command::new("/bin/true");
        // SAFETY: the closure only calls write(2), which is async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                let written = libc::write(procs_fd, b"0".as_ptr().cast(), 1);
                if written == 1 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let mut child = command
            .spawn()
            .context("spawning /bin/true in the cgroup")?;
        let pid = child.id().context("child pid")?;
        drop(procs);

        let event = tokio::time::timeout(EVENT_DEADLINE, exec_of(&mut probes, pid))
            .await
            .with_context(|| {
                format!("no sched_process_exec event for pid {pid} within {EVENT_DEADLINE:?}")
            })??;
        let status = child.wait().await?;
        assert!(status.success(), "/bin/true failed: {status}");

        assert_eq!(event.header.pid, pid, "thread id of a single-threaded exec");
        assert_eq!(event.header.tgid, pid);
        assert_eq!(
            event.header.cgroup_id,
            cgroup_id,
            "cgroup id must be the inode of {}",
            cgroup.path.display()
        );
        assert_eq!(event.header.uid, 0, "tests run as root");
        assert_eq!(comm_lossy(&event.comm), "true");
        assert!(event.header.ktime_ns > 0);
        Ok(())
    }

    /// Reads events until the exec of `pid` shows up (other processes exec meanwhile).
    async fn exec_of(probes: &mut KernelProbes, pid: u32) -> anyhow::Result<ProcessExecEvent> {
        loop {
            match probes.events().next().await? {
                KernelEvent::ProcessExec(event) if event.header.tgid == pid => return Ok(event),
                // Other processes' execs, and other probes' events.
                _ => {}
            }
        }
    }
}
