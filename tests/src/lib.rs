//! Integration harness for Gatehouse: a Kubernetes API emulator faithful where kubectl
//! looks, a local OIDC issuer, launchers for the real servers, and helpers that run real
//! kubectl. Never used by production code.
//!
//! # Layout
//! - [`clickhouse`]: launcher for a throwaway ClickHouse server (store tests).
//! - [`emulator`]: the Kubernetes API emulator (discovery, CRUD, Table, watch, RBAC,
//!   impersonation, exec/attach/port-forward/logs with real processes).
//! - [`pki`]: throwaway CAs and certificates written to disk.
//! - [`oidc`]: a local OpenID Connect issuer that mints ID tokens for test users.
//! - [`sts`]: moto's STS server behind a counting, SigV4-verifying front (EKS tests).
//! - [`harness`]: free ports, kubeconfigs, real kubectl, launchers for the stack.

pub mod clickhouse;
pub mod emulator;
pub mod harness;
pub mod oidc;
pub mod pki;
pub mod sts;
