//! `tracepoint/sched/sched_process_exec`: a task committed to a new program image.
//!
//! Fires in the context of the exec'ing task after the new image is installed, so `comm` is
//! the new program's name and the cgroup is the one the task runs in.

use aya_ebpf::{
    EbpfContext as _,
    helpers::generated::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use gatehouse_common::kernel::{COMM_LEN, EventHeader, ProcessExecEvent, kind};

use crate::maps::EVENTS;

/// Why an exec was not reported.
enum Dropped {
    /// The events ring buffer had no room: userspace is behind.
    RingFull,
}

/// Entry point; the kernel ignores a tracepoint program's return value.
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    match try_sched_process_exec(&ctx) {
        Ok(()) => 0,
        Err(Dropped::RingFull) => {
            warn!(
                &ctx,
                "events ring buffer full: exec of tgid {} not reported",
                ctx.tgid()
            );
            1
        }
    }
}

fn try_sched_process_exec(ctx: &TracePointContext) -> Result<(), Dropped> {
    let mut entry = EVENTS
        .reserve::<ProcessExecEvent>(0)
        .ok_or(Dropped::RingFull)?;
    // SAFETY: both helpers take no arguments and are allowed in tracepoint programs.
    let (cgroup_id, ktime_ns) = unsafe { (bpf_get_current_cgroup_id(), bpf_ktime_get_ns()) };
    entry.write(ProcessExecEvent {
        header: EventHeader {
            kind: kind::PROCESS_EXEC,
            pid: ctx.pid(),
            tgid: ctx.tgid(),
            uid: ctx.uid(),
            cgroup_id,
            ktime_ns,
        },
        // A failed read leaves comm empty rather than losing the exec itself.
        comm: ctx.command().unwrap_or([0u8; COMM_LEN]),
    });
    entry.submit(0);
    Ok(())
}
