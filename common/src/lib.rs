//! Types shared by the Gatehouse agent, its eBPF programs and the collector.
//!
//! # Layout
//! - [`kernel`]: `#[repr(C)]` event structs and map names the eBPF programs and the agent
//!   agree on (no_std; `aya::Pod` impls behind the `user` feature).
//! - [`audit`] (feature `std`): audit events (API requests, session ends) with serde.
//! - [`ingest`] (feature `std`): the agent → collector wire format (length-delimited JSON
//!   batch and ack frames).
//! - [`spdy`] (feature `std`): sans-IO SPDY/3.1 codec (frames, incremental decoder,
//!   zlib header contexts with the SPDY/3 dictionary) for Kubernetes exec/port-forward.
//! - [`oidc`] (feature `oidc`): OIDC ID-token verification (discovery, JWKS by `kid`,
//!   token cache), used by the agent and the collector's query API.
//! - [`mask`] (feature `mask`): masking engine — profiles, JSON masking by object kind,
//!   the streaming text masker for logs and exec/attach output.
//! - [`policy`] (feature `policy`): the policy language (YAML, line-numbered validation)
//!   and its engine (indexed rules, most restrictive match, default deny).
#![cfg_attr(not(feature = "std"), no_std)]

#[cfg(feature = "std")]
pub mod audit;
#[cfg(feature = "std")]
pub mod ingest;
pub mod kernel;
#[cfg(feature = "mask")]
pub mod mask;
#[cfg(feature = "oidc")]
pub mod oidc;
#[cfg(feature = "policy")]
pub mod policy;
#[cfg(feature = "std")]
pub mod spdy;
