//! Library modules behind the `gatehouse` user CLI (token cache, kubectl exec credential).

pub mod cache;
pub mod exec_credential;
