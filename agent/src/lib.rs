//! Gatehouse agent: the node-local gateway every kubectl request goes through.
//!
//! # Layout
//! - [`ebpf`]: loads the embedded eBPF object and reads kernel events from its ring buffer.
#![deny(missing_docs)]

pub mod ebpf;
