//! One running container: its main process, log pumps, stdin/pty for attach, state.

use super::ContainerSpec;
use super::ContainerState;
use super::cgroup::ProcsFile;
use super::logbuf::{LogBuffer, LogStream};
use super::process::{self, SpawnSpec};
use super::pty::PtyMaster;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;

/// Bytes of log kept per container.
const LOG_BYTES: usize = 4 << 20;

/// Writable end of a container's stdin, shared by attach sessions.
pub type SharedStdin = Arc<tokio::sync::Mutex<Option<Box<dyn AsyncWrite + Send + Unpin>>>>;

/// A container as the runtime tracks it.
pub struct Container {
    /// Its spec.
    pub spec: ContainerSpec,
    /// Its cgroup directory, when cgroups are in use.
    pub cgroup: Option<PathBuf>,
    /// cgroup.procs of that directory, for exec'd children.
    pub procs: Option<ProcsFile>,
    /// Working directory for its processes.
    pub cwd: PathBuf,
    /// Captured output.
    pub log: Arc<LogBuffer>,
    /// Current state.
    pub state: watch::Sender<ContainerState>,
    /// stdin of the main process (only with `stdin: true`, non-tty).
    pub stdin: SharedStdin,
    /// pty master of the main process (only with `tty: true`).
    pub pty: Option<PtyMaster>,
    /// Process groups to kill when cgroups are unavailable (main + exec sessions).
    pub pgids: Mutex<Vec<i32>>,
    /// Main process pid.
    pub main_pid: Option<u32>,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container")
            .field("name", &self.spec.name)
            .field("cgroup", &self.cgroup)
            .field("main_pid", &self.main_pid)
            .finish_non_exhaustive()
    }
}

impl Container {
    /// Starts the main process (or records why it could not start).
    pub fn start(
        spec: ContainerSpec,
        hostname: &str,
        cgroup: Option<PathBuf>,
        cwd: PathBuf,
    ) -> Arc<Self> {
        let procs = cgroup.as_deref().and_then(|d| ProcsFile::new(d).ok());
        let argv = if spec.argv.is_empty() {
            vec!["sleep".to_string(), "infinity".to_string()]
        } else {
            spec.argv.clone()
        };
        let started_at = now_rfc3339();
        let spawned = process::spawn(&SpawnSpec {
            argv: &argv,
            env: &spec.env,
            hostname,
            cwd: &cwd,
            cgroup: procs.as_ref(),
            stdin: spec.stdin,
            stdout: true,
            stderr: true,
            tty: spec.tty,
        });
        let log = Arc::new(LogBuffer::new(LOG_BYTES));
        let (state, pty, stdin, main_pid, pgids, child) = match spawned {
            Ok(mut s) => {
                let stdin: SharedStdin = Arc::new(tokio::sync::Mutex::new(None));
                if let Some(w) = s.child.stdin.take() {
                    stdin.try_lock().map(|mut g| *g = Some(Box::new(w))).ok();
                } else if let (Some(p), true) = (&s.pty, spec.stdin) {
                    stdin
                        .try_lock()
                        .map(|mut g| *g = Some(Box::new(p.clone())))
                        .ok();
                }
                (
                    ContainerState::Running {
                        started_at: started_at.clone(),
                    },
                    s.pty.clone(),
                    stdin,
                    s.child.id(),
                    vec![s.pgid],
                    Some(s),
                )
            }
            Err(e) => {
                tracing::warn!(container = %spec.name, error = %e, "container failed to start");
                log.close();
                (
                    ContainerState::Waiting {
                        reason: "RunContainerError".into(),
                        message: super::RuntimeError::from_spawn(&argv[0], e).to_string(),
                    },
                    None,
                    Arc::new(tokio::sync::Mutex::new(None)),
                    None,
                    Vec::new(),
                    None,
                )
            }
        };
        let container = Arc::new(Self {
            spec,
            cgroup,
            procs,
            cwd,
            log,
            state: watch::channel(state).0,
            stdin,
            pty,
            pgids: Mutex::new(pgids),
            main_pid,
        });
        if let Some(s) = child {
            tokio::spawn(supervise(container.clone(), s, started_at));
        }
        container
    }

    /// Remembers an exec session's process group (killed with the pod without cgroups).
    pub fn track_pgid(&self, pgid: i32) {
        self.pgids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(pgid);
    }

    /// Kills every process of the container (cgroup.kill, else the process groups).
    pub fn kill(&self) {
        if let Some(dir) = &self.cgroup
            && let Err(e) = super::cgroup::kill_all(dir)
        {
            tracing::debug!(error = %e, "cgroup.kill");
        }
        for pgid in self.pgids.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            process::kill_group(*pgid);
        }
    }
}

/// Pumps output into the log, waits for exit, then records the state.
async fn supervise(c: Arc<Container>, mut s: process::Spawned, started_at: String) {
    let mut pumps = Vec::new();
    if let Some(p) = s.pty.clone() {
        pumps.push(tokio::spawn(pump(p, c.log.clone(), LogStream::Stdout)));
    }
    if let Some(out) = s.child.stdout.take() {
        pumps.push(tokio::spawn(pump(out, c.log.clone(), LogStream::Stdout)));
    }
    if let Some(err) = s.child.stderr.take() {
        pumps.push(tokio::spawn(pump(err, c.log.clone(), LogStream::Stderr)));
    }
    let code = match s.child.wait().await {
        Ok(status) => process::exit_code(status),
        Err(_) => -1,
    };
    // Descendants may still hold the pipes; give the pumps a moment, not forever.
    for p in pumps {
        let _ = tokio::time::timeout(std::time::Duration::from_millis(500), p).await;
    }
    c.log.close();
    c.state.send_replace(ContainerState::Terminated {
        exit_code: code,
        started_at,
        finished_at: now_rfc3339(),
    });
}

async fn pump(mut r: impl AsyncRead + Unpin, log: Arc<LogBuffer>, stream: LogStream) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => log.append(stream, &buf[..n]),
        }
    }
}

/// Now, RFC 3339 with second precision (as `status.containerStatuses` shows it).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
