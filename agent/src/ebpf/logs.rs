//! Forwards the programs' `aya-log` records to the process logger (the `log` facade, which
//! the agent's tracing subscriber captures).

use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::{io::unix::AsyncFd, runtime::Handle, task::JoinHandle};

use super::{EbpfError, Result};

/// The task that drains the `AYA_LOGS` ring buffer; stopped when dropped.
///
/// The task owns the [`EbpfLogger`]: it must outlive program loading, because dropping it
/// closes the log map the programs were relocated against.
pub(super) struct LogForwarder {
    task: JoinHandle<()>,
}

impl LogForwarder {
    /// Takes the object's log map and starts draining it on `runtime`.
    pub(super) fn start(ebpf: &mut Ebpf, runtime: &Handle) -> Result<Self> {
        let logger = EbpfLogger::init(ebpf).map_err(EbpfError::Log)?;
        // Registering needs the runtime's reactor: enter it explicitly.
        let _entered = runtime.enter();
        // SAFETY: the logger owns its ring buffer's fd until it is dropped, and always reports
        // that same fd; the `AsyncFd` owns the logger.
        let mut logger =
            unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
                .map_err(|error| EbpfError::Poll {
                    name: "AYA_LOGS",
                    source: error.into_parts().1,
                })?;
        let task = runtime.spawn(async move {
            loop {
                match logger.readable_mut().await {
                    Ok(mut guard) => {
                        guard.get_inner_mut().flush();
                        guard.clear_ready();
                    }
                    Err(error) => {
                        tracing::warn!(%error, "eBPF log forwarder stopped");
                        return;
                    }
                }
            }
        });
        Ok(Self { task })
    }
}

impl Drop for LogForwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
