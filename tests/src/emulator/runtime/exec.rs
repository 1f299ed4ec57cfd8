//! Processes exec'd into a container and attach handles to a container's main process.

use super::ContainerState;
use super::container::{Container, SharedStdin};
use super::error::{Result, RuntimeError};
use super::logbuf::LogStream;
use super::process::{self, SpawnSpec};
use super::pty::PtyMaster;
use bytes::Bytes;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, watch};

/// A boxed process input.
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;
/// A boxed process output.
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;

/// What an exec session asks for.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// argv (the repeated `command` parameter).
    pub argv: Vec<String>,
    /// Keep stdin open.
    pub stdin: bool,
    /// Capture stdout.
    pub stdout: bool,
    /// Capture stderr.
    pub stderr: bool,
    /// Run on a pty.
    pub tty: bool,
}

/// A running exec'd process. Take the pipes you need, then [`ExecProcess::wait`].
pub struct ExecProcess {
    /// Writable stdin (pipe or pty master).
    pub stdin: Option<BoxWrite>,
    /// stdout (or the pty's combined output).
    pub stdout: Option<BoxRead>,
    /// stderr (None with a tty).
    pub stderr: Option<BoxRead>,
    /// The pty, for resizes.
    pub pty: Option<PtyMaster>,
    /// Pid of the process.
    pub pid: Option<u32>,
    child: tokio::process::Child,
    pgid: i32,
    exited: bool,
}

impl Drop for ExecProcess {
    /// A session that ends early (client gone) must not leave its process tree behind.
    fn drop(&mut self) {
        if !self.exited {
            self.kill();
        }
    }
}

impl std::fmt::Debug for ExecProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecProcess")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl ExecProcess {
    /// Waits for exit; returns the kubelet-style exit code.
    pub async fn wait(&mut self) -> i32 {
        let code = match self.child.wait().await {
            Ok(status) => process::exit_code(status),
            Err(_) => -1,
        };
        self.exited = true;
        code
    }

    /// Kills the process group (the client went away).
    pub fn kill(&self) {
        process::kill_group(self.pgid);
    }
}

pub(super) fn exec(c: &Container, hostname: &str, opts: ExecOptions) -> Result<ExecProcess> {
    if !matches!(*c.state.borrow(), ContainerState::Running { .. }) {
        return Err(RuntimeError::NotRunning(c.spec.name.clone()));
    }
    let program = opts.argv.first().cloned().unwrap_or_default();
    let mut s = process::spawn(&SpawnSpec {
        argv: &opts.argv,
        env: &c.spec.env,
        hostname,
        cwd: &c.cwd,
        cgroup: c.procs.as_ref(),
        stdin: opts.stdin,
        stdout: opts.stdout,
        stderr: opts.stderr,
        tty: opts.tty,
    })
    .map_err(|e| RuntimeError::from_spawn(&program, e))?;
    c.track_pgid(s.pgid);
    let (stdin, stdout, stderr): (Option<BoxWrite>, Option<BoxRead>, Option<BoxRead>) = match &s.pty
    {
        Some(p) => (
            opts.stdin.then(|| Box::new(p.clone()) as _),
            Some(Box::new(p.clone())),
            None,
        ),
        None => (
            s.child.stdin.take().map(|w| Box::new(w) as _),
            s.child.stdout.take().map(|r| Box::new(r) as _),
            s.child.stderr.take().map(|r| Box::new(r) as _),
        ),
    };
    Ok(ExecProcess {
        stdin,
        stdout,
        stderr,
        pty: s.pty.take(),
        pid: s.child.id(),
        pgid: s.pgid,
        child: s.child,
        exited: false,
    })
}

/// A live view of a container's main process for `pods/attach`.
pub struct AttachHandle {
    /// Output as the process writes it (stdout/stderr tagged; a tty is all stdout).
    pub output: broadcast::Receiver<(LogStream, Bytes)>,
    /// The main process's stdin, when requested and the container has `stdin: true`.
    pub stdin: Option<SharedStdin>,
    /// The pty, when the container has `tty: true`.
    pub pty: Option<PtyMaster>,
    /// Container state; attach ends when it becomes Terminated.
    pub state: watch::Receiver<ContainerState>,
}

impl std::fmt::Debug for AttachHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachHandle")
            .field("stdin", &self.stdin.is_some())
            .field("pty", &self.pty)
            .finish_non_exhaustive()
    }
}

pub(super) fn attach(c: &Container, stdin: bool) -> Result<AttachHandle> {
    if stdin && !c.spec.stdin {
        return Err(RuntimeError::NoStdin(c.spec.name.clone()));
    }
    if !matches!(*c.state.borrow(), ContainerState::Running { .. }) {
        return Err(RuntimeError::NotRunning(c.spec.name.clone()));
    }
    Ok(AttachHandle {
        output: c.log.subscribe(),
        stdin: stdin.then(|| Arc::clone(&c.stdin)),
        pty: c.pty.clone(),
        state: c.state.subscribe(),
    })
}
