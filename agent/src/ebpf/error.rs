//! Errors of loading the probes and reading their events.

use std::io;

/// Shorthand for this module's results.
pub type Result<T, E = EbpfError> = std::result::Result<T, E>;

/// Why the probes could not be loaded or read.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// The agent binary carries no eBPF object (built on a machine without the toolchain).
    #[error(
        "agent built without its eBPF object: run `cargo xtask build-ebpf` before building \
         (looked for {searched})"
    )]
    NotBuilt {
        /// Where the build looked for the object.
        searched: &'static str,
    },
    /// No tokio runtime is current; the ring buffers are polled through its reactor.
    #[error("loading eBPF probes needs a current tokio runtime")]
    NoRuntime,
    /// The kernel refused the object (maps, BTF, relocations).
    #[error("loading the eBPF object")]
    Load(#[source] aya::EbpfError),
    /// The object has no program of that name: agent and object are out of step.
    #[error("the eBPF object has no program `{0}`")]
    MissingProgram(&'static str),
    /// The object has no map of that name: agent and object are out of step.
    #[error("the eBPF object has no map `{0}`")]
    MissingMap(&'static str),
    /// A map exists but is not of the expected kind or could not be mapped.
    #[error("eBPF map `{name}`")]
    Map {
        /// The map's name in the object.
        name: &'static str,
        /// What aya reported.
        #[source]
        source: aya::maps::MapError,
    },
    /// A program failed to type-check, pass the verifier or attach.
    #[error("{action} eBPF program `{name}`")]
    Program {
        /// The program's name in the object.
        name: &'static str,
        /// `typing`, `loading` or `attaching`.
        action: &'static str,
        /// What aya reported (verifier log included).
        #[source]
        source: aya::programs::ProgramError,
    },
    /// The object's `aya-log` map could not be opened.
    #[error("starting the eBPF log forwarder")]
    Log(#[source] aya_log::Error),
    /// Registering or polling a ring buffer's file descriptor failed.
    #[error("polling eBPF ring buffer `{name}`")]
    Poll {
        /// The map's name in the object.
        name: &'static str,
        /// The reactor's error.
        #[source]
        source: io::Error,
    },
}
