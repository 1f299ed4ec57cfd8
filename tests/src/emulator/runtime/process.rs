//! Spawning a container process: argv/env/cwd, its own session (so the whole tree can be
//! killed), stdio as pipes or a pty, and joining the container's cgroup before exec.

use super::cgroup::ProcsFile;
use super::pty::{self, PtyMaster};
use std::io;
use std::path::Path;
use std::process::Stdio;

/// PATH for containers that set none (what containerd puts in an image-less spec).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to spawn.
#[derive(Debug)]
pub struct SpawnSpec<'a> {
    /// argv (non-empty).
    pub argv: &'a [String],
    /// Container env, applied over a minimal base (PATH, HOSTNAME, HOME, TERM for ttys).
    pub env: &'a [(String, String)],
    /// Pod name, for HOSTNAME.
    pub hostname: &'a str,
    /// Working directory.
    pub cwd: &'a Path,
    /// cgroup to join before exec.
    pub cgroup: Option<&'a ProcsFile>,
    /// Keep stdin open as a pipe (or the pty).
    pub stdin: bool,
    /// Capture stdout (else /dev/null).
    pub stdout: bool,
    /// Capture stderr (else /dev/null).
    pub stderr: bool,
    /// Run on a pty (stdout and stderr combined).
    pub tty: bool,
}

/// A running child.
#[derive(Debug)]
pub struct Spawned {
    /// The child (pipes taken from it as needed).
    pub child: tokio::process::Child,
    /// The pty master, for tty children.
    pub pty: Option<PtyMaster>,
    /// Process group (= session) id: kill `-pgid` to end the tree without cgroups.
    pub pgid: i32,
}

/// Spawns the process. Errors are the exec errors (`NotFound`, `PermissionDenied`, …).
pub fn spawn(spec: &SpawnSpec<'_>) -> io::Result<Spawned> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .env("HOSTNAME", spec.hostname)
        .env("HOME", "/root");
    if spec.tty {
        // The kubelet sets TERM for tty containers and exec sessions.
        cmd.env("TERM", "xterm");
    }
    for (k, v) in spec.env {
        cmd.env(k, v);
    }
    cmd.current_dir(spec.cwd).kill_on_drop(true);

    let mut pty_master = None;
    if spec.tty {
        let pair = pty::open()?;
        cmd.stdin(Stdio::from(pair.slave.try_clone()?))
            .stdout(Stdio::from(pair.slave.try_clone()?))
            .stderr(Stdio::from(pair.slave));
        pty_master = Some(pair.master);
    } else {
        cmd.stdin(if spec.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if spec.stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if spec.stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    }

    let cgroup = spec.cgroup.cloned();
    let tty = spec.tty;
    // SAFETY: the closure only calls async-signal-safe functions (open/write/close,
    // setsid, ioctl) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(procs) = &cgroup {
                procs.join_self()?;
            }
            if tty {
                pty::make_controlling_tty()
            } else if libc::setsid() < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        });
    }
    let child = cmd.spawn()?;
    // Dropping `cmd` closes our copies of the pty slave, so the master sees EOF later.
    drop(cmd);
    let pgid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .unwrap_or_default();
    Ok(Spawned {
        child,
        pty: pty_master,
        pgid,
    })
}

/// Exit code as the kubelet reports it: the code, or 128 + signal.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// SIGKILLs a whole process group (ignored if it is gone).
pub fn kill_group(pgid: i32) {
    if pgid > 1 {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
