//! Runs the real kubectl binaries against test servers: one-shot, long-running
//! (watch, `logs -f`, port-forward) and interactive in a pseudo-terminal (`exec -it`).

use super::tools;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Longest a one-shot kubectl command may take before the harness kills it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

/// A kubectl binary bound to one kubeconfig, with its own empty cache and home.
#[derive(Debug)]
pub struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    scratch: tempfile::TempDir,
    env: Vec<(String, String)>,
}

/// What a finished kubectl printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Fails with both streams shown unless the command exited 0.
    pub fn ok(self) -> anyhow::Result<Self> {
        if self.code == 0 {
            Ok(self)
        } else {
            anyhow::bail!(
                "kubectl exited {}\nstdout:\n{}\nstderr:\n{}",
                self.code,
                self.stdout,
                self.stderr
            )
        }
    }
}

impl Kubectl {
    /// kubectl at `binary` using `kubeconfig`.
    pub fn new(binary: PathBuf, kubeconfig: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            binary,
            kubeconfig: kubeconfig.to_path_buf(),
            scratch: tempfile::tempdir()?,
            env: Vec::new(),
        })
    }

    /// kubectl 1.32 (WebSocket exec/port-forward by default).
    pub fn v1_32(kubeconfig: &Path) -> anyhow::Result<Self> {
        Self::new(
            tools::kubectl_1_32().map_err(anyhow::Error::msg)?,
            kubeconfig,
        )
    }

    /// Debian's kubectl 1.20 (SPDY only).
    pub fn v1_20(kubeconfig: &Path) -> anyhow::Result<Self> {
        Self::new(
            tools::kubectl_1_20().map_err(anyhow::Error::msg)?,
            kubeconfig,
        )
    }

    /// Adds an environment variable for every command (e.g. `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`).
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The binary this runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    fn std_command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.binary);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.scratch.path().join("cache"))
            .args(args)
            .env_clear()
            .env("HOME", self.scratch.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LANG", "C.UTF-8");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::from(self.std_command(args));
        cmd.kill_on_drop(true);
        cmd
    }

    /// Runs kubectl to completion with no stdin.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.run_with_stdin(args, None).await
    }

    /// Runs kubectl to completion feeding `stdin` (then EOF).
    pub async fn run_with_stdin(
        &self,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> anyhow::Result<Output> {
        let mut cmd = self.command(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            let input = input.to_vec();
            tokio::spawn(async move {
                let _ = pipe.write_all(&input).await;
                let _ = pipe.shutdown().await;
            });
        }
        let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| {
                anyhow::anyhow!("kubectl {args:?} did not finish within {COMMAND_TIMEOUT:?}")
            })??;
        Ok(Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Starts a long-running kubectl (watch, `logs -f`, port-forward) whose stdout lines
    /// can be awaited; it is killed when the handle drops.
    pub fn spawn(&self, args: &[&str]) -> anyhow::Result<Running> {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(out) = child.stdout.take() {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut stderr_reader = None;
        if let Some(err) = child.stderr.take() {
            let sink = stderr.clone();
            stderr_reader = Some(tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut s) = sink.lock() {
                        s.push_str(&line);
                        s.push('\n');
                    }
                }
            }));
        }
        Ok(Running {
            child,
            lines: rx,
            seen: Vec::new(),
            stderr,
            stderr_reader,
        })
    }

    /// Starts kubectl on a fresh pseudo-terminal (for `exec -it`, `attach -it`).
    pub fn spawn_in_pty(&self, args: &[&str]) -> anyhow::Result<PtySession> {
        PtySession::spawn(self.std_command(args))
    }
}

/// A kubectl still running, with its stdout as lines.
#[derive(Debug)]
pub struct Running {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
    /// Ends when kubectl's stderr is closed and fully read.
    stderr_reader: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Waits until a stdout line satisfies `pred`; returns it. Fails after `timeout`, or if
    /// kubectl's stdout ends first, showing what it printed.
    pub async fn wait_line(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return Ok(line);
                    }
                }
                Ok(None) => anyhow::bail!(
                    "kubectl output ended before the expected line; stdout:\n{}\nstderr:\n{}",
                    self.seen.join("\n"),
                    self.stderr()
                ),
                Err(_) => anyhow::bail!(
                    "no expected line within {timeout:?}; stdout:\n{}\nstderr:\n{}",
                    self.seen.join("\n"),
                    self.stderr()
                ),
            }
        }
    }

    /// Every stdout line read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// What kubectl wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits for kubectl to exit by itself; returns its exit code. Also waits (within
    /// `timeout`) until its stderr is read to the end, so [`Running::stderr`] then holds
    /// everything it printed, last line included.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<i32> {
        let deadline = tokio::time::Instant::now() + timeout;
        let status = tokio::time::timeout_at(deadline, self.child.wait())
            .await
            .map_err(|_| anyhow::anyhow!("kubectl still running after {timeout:?}"))??;
        if let Some(reader) = self.stderr_reader.take() {
            let _ = tokio::time::timeout_at(deadline, reader).await;
        }
        Ok(status.code().unwrap_or(-1))
    }

    /// Stops kubectl (SIGKILL) and reaps it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// kubectl on a pseudo-terminal: type into it, read the screen bytes.
#[derive(Debug)]
pub struct PtySession {
    child: std::process::Child,
    master: std::fs::File,
    screen: Arc<Mutex<Vec<u8>>>,
}

impl PtySession {
    fn spawn(mut cmd: std::process::Command) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt;
        let winsize = nix::pty::Winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&winsize), None)?;
        let slave: OwnedFd = pty.slave;
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave.try_clone()?))
            .env("TERM", "xterm");
        // SAFETY: setsid and ioctl are async-signal-safe; they make the pty the child's
        // controlling terminal so kubectl sees a real interactive terminal.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(slave);
        let master = std::fs::File::from(pty.master);
        let mut reader = master.try_clone()?;
        let screen = Arc::new(Mutex::new(Vec::new()));
        let sink = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the child side closes: that ends the reader.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.extend_from_slice(&buf[..n]);
                }
            }
        });
        Ok(Self {
            child,
            master,
            screen,
        })
    }

    /// Types `bytes` at the terminal.
    pub fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.master.write_all(bytes)?;
        self.master.flush()?;
        Ok(())
    }

    /// Everything kubectl has put on the terminal so far (lossy UTF-8).
    pub fn screen(&self) -> String {
        self.screen
            .lock()
            .map(|s| String::from_utf8_lossy(&s).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the screen contains `needle`.
    pub async fn wait_for(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.screen().contains(needle) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!(
            "terminal never showed {needle:?}; screen:\n{}",
            self.screen()
        )
    }

    /// Waits for kubectl to exit; returns its exit code.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code().unwrap_or(-1));
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                anyhow::bail!(
                    "kubectl in pty still running after {timeout:?}; screen:\n{}",
                    self.screen()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The pty master's raw fd (for resizing in tests).
    pub fn master_fd(&self) -> i32 {
        self.master.as_raw_fd()
    }
}

impl Drop for PtySession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
