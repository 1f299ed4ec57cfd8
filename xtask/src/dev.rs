//! `cargo xtask dev`: builds everything and runs the local stack (`dev-stack`), in front
//! of the emulator or, with `--upstream-kubeconfig PATH [--context C]`, of a real cluster.
//!
//! SIGINT and SIGTERM sent to xtask are forwarded to dev-stack so it can shut its
//! components down; a Ctrl-C in the terminal already reaches dev-stack (same process
//! group) and is not sent twice. xtask exits with dev-stack's exit code.

use std::{
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    process::{Command, ExitCode},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{
    ebpf, setup,
    util::{self, Paths, step},
};

/// The local stack's launcher, from the `gatehouse-tests` crate.
const DEV_STACK: &str = "dev-stack";

/// `cargo xtask dev --clickhouse`: which audit store the dev stack's collector uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClickHouseMode {
    /// ClickHouse when `clickhouse-server` is installed, else the embedded store.
    Auto,
    /// A throwaway ClickHouse server (fails when it is not installed).
    On,
    /// The embedded SQLite store (no server needed).
    Off,
}

impl ClickHouseMode {
    /// dev-stack's flag for it.
    pub fn arg(self) -> String {
        let mode = match self {
            Self::Auto => "auto",
            Self::On => "on",
            Self::Off => "off",
        };
        format!("--clickhouse={mode}")
    }
}

/// dev-stack's flags for `--upstream-kubeconfig`/`--context` (relative paths are made
/// absolute here, where the user typed them).
pub fn upstream_args(kubeconfig: Option<&std::path::Path>, context: Option<&str>) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(path) = kubeconfig {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        args.push(format!("--upstream-kubeconfig={}", path.display()));
        if let Some(context) = context {
            args.push(format!("--context={context}"));
        }
    }
    args
}

/// Runs setup, the eBPF and workspace builds, then dev-stack; returns its exit code.
pub fn run(paths: &Paths, args: &[String]) -> anyhow::Result<ExitCode> {
    setup::run(paths)?;
    ebpf::build(paths, ebpf::Profile::Release)?;

    step("build workspace binaries");
    let mut build = util::cargo();
    build
        .current_dir(&paths.root)
        .args(["build", "--workspace", "--bins"]);
    for (key, value) in paths.test_env() {
        build.env(key, value);
    }
    util::run(&mut build)?;

    let bin_dir = paths.target_dir.join("debug");
    let dev_stack = bin_dir.join(DEV_STACK);
    if !dev_stack.is_file() {
        bail!(
            "{} was not built (crate gatehouse-tests)",
            dev_stack.display()
        );
    }
    step(DEV_STACK);
    let mut command = Command::new(&dev_stack);
    command.args(args).env("GATEHOUSE_BIN_DIR", &bin_dir);
    for (key, value) in paths.test_env() {
        command.env(key, value);
    }
    util::note(format_args!("$ {}", util::describe(&command)));
    run_forwarding_signals(command)
}

/// Spawns `command` and waits for it, forwarding SIGINT/SIGTERM sent to this process.
fn run_forwarding_signals(mut command: Command) -> anyhow::Result<ExitCode> {
    let signals = SignalSet::interrupt_and_terminate()?;
    // Block them here so they queue for `sigtimedwait` instead of killing xtask...
    signals.block()?;
    // ...but let the child start with the normal mask (a blocked mask survives exec).
    // SAFETY: the closure only calls sigprocmask, which is async-signal-safe.
    unsafe {
        command.pre_exec(move || signals.unblock().map_err(std::io::Error::other));
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", command.get_program().to_string_lossy()))?;
    let pid = libc::pid_t::try_from(child.id()).context("child pid out of range")?;
    loop {
        if let Some(status) = child.try_wait().context("waiting for dev-stack")? {
            // A death by signal N reads as 128 + N, as in a shell.
            let code = status
                .code()
                .or_else(|| status.signal().map(|signal| 128 + signal))
                .unwrap_or(1);
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
        }
        if let Some((signal, from_terminal)) = signals.wait(Duration::from_millis(200))? {
            // The terminal signals the whole foreground group, dev-stack included.
            if !from_terminal {
                // SAFETY: kill has no memory-safety preconditions; `pid` is our child,
                // not yet reaped (try_wait above saw it running).
                unsafe { libc::kill(pid, signal) };
            }
        }
    }
}

/// SIGINT + SIGTERM as a `sigset_t`.
#[derive(Clone, Copy)]
struct SignalSet(libc::sigset_t);

impl SignalSet {
    fn interrupt_and_terminate() -> anyhow::Result<Self> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t out-pointer.
        let ok = unsafe {
            libc::sigemptyset(&mut set) == 0
                && libc::sigaddset(&mut set, libc::SIGINT) == 0
                && libc::sigaddset(&mut set, libc::SIGTERM) == 0
        };
        if !ok {
            bail!(
                "building the signal set: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(Self(set))
    }

    fn mask(&self, how: libc::c_int) -> Result<(), String> {
        // SAFETY: `self.0` is an initialised sigset_t; the old mask is not requested.
        let rc = unsafe { libc::pthread_sigmask(how, &self.0, std::ptr::null_mut()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(format!("pthread_sigmask: error {rc}"))
        }
    }

    fn block(&self) -> anyhow::Result<()> {
        self.mask(libc::SIG_BLOCK).map_err(anyhow::Error::msg)
    }

    fn unblock(&self) -> Result<(), String> {
        self.mask(libc::SIG_UNBLOCK)
    }

    /// Waits up to `timeout` for one of the signals: `(signal, sent by the terminal)`.
    fn wait(&self, timeout: Duration) -> anyhow::Result<Option<(libc::c_int, bool)>> {
        let timeout = libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos()),
        };
        // SAFETY: siginfo_t is plain data, filled in by the kernel.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to an initialised set, an out-struct and a timespec.
        let signal = unsafe { libc::sigtimedwait(&self.0, &mut info, &timeout) };
        if signal < 0 {
            let error = std::io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(None),
                _ => Err(error).context("sigtimedwait"),
            };
        }
        // Terminal-generated signals carry SI_KERNEL; kill(1)/kill(2) carry SI_USER.
        Ok(Some((signal, info.si_code == libc::SI_KERNEL)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_flags_reach_dev_stack_with_an_absolute_path() {
        assert!(upstream_args(None, None).is_empty());
        let args = upstream_args(Some(std::path::Path::new("kube/config")), Some("staging"));
        assert_eq!(args.len(), 2);
        let path = args[0].trim_start_matches("--upstream-kubeconfig=");
        assert!(
            std::path::Path::new(path).is_absolute() && path.ends_with("kube/config"),
            "{args:?}"
        );
        assert_eq!(args[1], "--context=staging");
    }

    #[test]
    fn clickhouse_mode_reaches_dev_stack() {
        assert_eq!(ClickHouseMode::Off.arg(), "--clickhouse=off");
        assert_eq!(ClickHouseMode::Auto.arg(), "--clickhouse=auto");
    }
}
