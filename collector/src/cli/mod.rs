//! Library modules behind the `gatehouse` user CLI (token cache, kubectl exec credential, kubeconfig).

pub mod cache;
pub mod exec_credential;
pub mod kubeconfig;
pub mod pkce;
