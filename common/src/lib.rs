//! Types shared by the Gatehouse agent, its eBPF programs and the collector.
//!
//! # Layout
//! - [`kernel`]: `#[repr(C)]` event structs and map names the eBPF programs and the agent
//!   agree on (no_std; `aya::Pod` impls behind the `user` feature).
#![cfg_attr(not(feature = "std"), no_std)]

pub mod kernel;
