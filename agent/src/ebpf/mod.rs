//! Kernel probes: loads the embedded eBPF object, attaches its programs and reads their events.
//!
//! # Layout
//! - `error`: [`EbpfError`] and the [`Result`] shorthand.
//! - `object`: the object `cargo xtask build-ebpf` built, embedded at compile time (empty when
//!   the agent was built without it; loading then fails with [`EbpfError::NotBuilt`]).
//! - `events`: the `EVENTS` ring buffer as an async reader ([`KernelEvents`]) of
//!   [`KernelEvent`]s.
//! - `logs`: forwards the programs' `aya-log` records to the process logger.
//!
//! [`KernelProbes::load`] does everything once, at startup; the returned handle owns the
//! programs, their attachments and the maps, and detaches everything when dropped.

mod error;
mod events;
mod logs;
mod object;

use aya::{Ebpf, maps::RingBuf, programs::TracePoint};
use gatehouse_common::kernel::EVENTS_MAP;

pub use error::{EbpfError, Result};
pub use events::{KernelEvent, KernelEvents, comm_lossy};

/// A tracepoint program in the object: `(program name, tracepoint category, tracepoint name)`.
type TracepointProgram = (&'static str, &'static str, &'static str);

/// Every tracepoint program in the object, attached in this order.
const TRACEPOINTS: &[TracepointProgram] = &[("sched_process_exec", "sched", "sched_process_exec")];

/// The loaded and attached eBPF programs, with typed handles on their maps.
///
/// Built once by [`KernelProbes::load`]; dropping it detaches the programs.
pub struct KernelProbes {
    // Fields drop in order: readers first, then the object that owns programs and links.
    events: KernelEvents,
    _logs: logs::LogForwarder,
    _ebpf: Ebpf,
}

impl KernelProbes {
    /// Loads the embedded object, starts forwarding its log records, attaches every
    /// program and opens the events ring buffer.
    ///
    /// Needs root (or `CAP_BPF` + `CAP_PERFMON`), a mounted tracefs and a current tokio
    /// runtime (the ring buffers are polled through the runtime's reactor).
    pub fn load() -> Result<Self> {
        let bytes = object::bytes()?;
        let handle = tokio::runtime::Handle::try_current().map_err(|_| EbpfError::NoRuntime)?;
        let mut ebpf = Ebpf::load(bytes).map_err(EbpfError::Load)?;
        // Before any program is loaded: the programs reference the log map by fd, and the
        // forwarder owns that fd from here on (see TOOLCHAIN.md).
        let logs = logs::LogForwarder::start(&mut ebpf, &handle)?;
        for &(name, category, tracepoint) in TRACEPOINTS {
            attach_tracepoint(&mut ebpf, name, category, tracepoint)?;
        }
        let ring = ebpf
            .take_map(EVENTS_MAP)
            .ok_or(EbpfError::MissingMap(EVENTS_MAP))?;
        let ring = RingBuf::try_from(ring).map_err(|source| EbpfError::Map {
            name: EVENTS_MAP,
            source,
        })?;
        let events = KernelEvents::new(ring, &handle)?;
        tracing::info!(programs = TRACEPOINTS.len(), "eBPF probes attached");
        Ok(Self {
            events,
            _logs: logs,
            _ebpf: ebpf,
        })
    }

    /// The decoded events of every attached program, in the order the kernel committed them.
    pub fn events(&mut self) -> &mut KernelEvents {
        &mut self.events
    }
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    name: &'static str,
    category: &'static str,
    tracepoint: &'static str,
) -> Result<()> {
    let program_error = |action, source| EbpfError::Program {
        name,
        action,
        source,
    };
    let program: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or(EbpfError::MissingProgram(name))?
        .try_into()
        .map_err(|source| program_error("typing", source))?;
    program
        .load()
        .map_err(|source| program_error("loading", source))?;
    program
        .attach(category, tracepoint)
        .map_err(|source| program_error("attaching", source))?;
    Ok(())
}
