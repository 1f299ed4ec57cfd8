//! Gatehouse eBPF programs, loaded by `gatehouse-agent` (see `agent/src/ebpf`).
//!
//! # Layout
//! - [`maps`]: the maps every program shares (the `EVENTS` ring buffer).
//! - [`process_exec`]: `tracepoint/sched/sched_process_exec` → [`ProcessExecEvent`].
//!
//! One program per file; each entry point only calls its `try_*` helper. Event layouts and
//! map names come from `gatehouse_common::kernel`, so the agent decodes exactly what is
//! written here.
//!
//! [`ProcessExecEvent`]: gatehouse_common::kernel::ProcessExecEvent
#![no_std]
#![no_main]

mod maps;
mod process_exec;

/// eBPF programs cannot unwind or abort; the verifier rejects any path that reaches here,
/// so a reachable panic shows up as a load failure rather than at run time.
#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// Kernel license: GPL-only helpers (ring buffer output, `bpf_get_current_cgroup_id`)
/// require a GPL-compatible program.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
