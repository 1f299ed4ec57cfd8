//! Kernel ↔ userspace event layouts and eBPF map names (no_std, shared with `agent-ebpf`).

/// Name of the ring buffer every probe writes its events to.
pub const EVENTS_MAP: &str = "EVENTS";

/// Length of `task->comm` in the kernel.
pub const COMM_LEN: usize = 16;

/// Event kinds carried in [`EventHeader::kind`].
pub mod kind {
    /// A committed exec (`sched:sched_process_exec`).
    pub const PROCESS_EXEC: u32 = 1;
}

/// Common prefix of every event in the ring buffer, so userspace can dispatch on `kind`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// One of [`kind`].
    pub kind: u32,
    /// Thread id (the kernel's `pid`).
    pub pid: u32,
    /// Process id (the kernel's `tgid`).
    pub tgid: u32,
    /// Real uid of the task.
    pub uid: u32,
    /// cgroup v2 id (inode of the cgroup directory) of the task.
    pub cgroup_id: u64,
    /// `bpf_ktime_get_ns()` when the event was taken.
    pub ktime_ns: u64,
}

/// `sched:sched_process_exec`: a process committed to a new program image.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessExecEvent {
    /// Common header; `kind` is [`kind::PROCESS_EXEC`].
    pub header: EventHeader,
    /// `task->comm` after the exec, NUL-padded.
    pub comm: [u8; COMM_LEN],
}

#[cfg(feature = "user")]
mod pod_impls {
    // SAFETY: plain-old-data `#[repr(C)]` structs with no padding-dependent invariants.
    unsafe impl aya::Pod for super::EventHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcessExecEvent {}
}
