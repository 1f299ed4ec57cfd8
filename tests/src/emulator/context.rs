//! State shared by every request: the store, tokens, request log and runtime.

use super::authn::TokenTable;
use super::request_log::RequestLog;
use super::runtime::ContainerRuntime;
use super::store::Store;
use std::sync::Arc;

/// Shared emulator state.
#[derive(Debug)]
pub struct Shared {
    /// Objects.
    pub store: Store,
    /// Bearer tokens.
    pub tokens: TokenTable,
    /// Answered requests.
    pub log: RequestLog,
    /// Pod processes.
    pub runtime: Arc<ContainerRuntime>,
    /// `host:port` the server listens on (for `/api` serverAddressByClientCIDRs).
    pub server_address: String,
    // --- EKS token authentication ---
    /// `k8s-aws-v1.` tokens are checked here when set ([`Emulator::enable_eks`]).
    ///
    /// [`Emulator::enable_eks`]: super::Emulator::enable_eks
    pub eks: std::sync::RwLock<Option<std::sync::Arc<super::eks::EksAuthenticator>>>,
    // --- masking tests ---
    /// Smallest complete response gzipped for clients sending `Accept-Encoding: gzip`
    /// (`usize::MAX`: never, the default; the API server's own threshold is 128 KiB).
    pub gzip_min_bytes: std::sync::atomic::AtomicUsize,
}
