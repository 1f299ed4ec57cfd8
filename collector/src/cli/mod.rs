//! Library modules behind the `gatehouse` user CLI (login, token cache and refresh, kubectl
//! exec credential, kubeconfig, audit queries, policy check/test).

pub mod audit;
pub mod cache;
pub mod exec_credential;
pub mod http;
pub mod kubeconfig;
pub mod login;
pub mod loopback;
pub mod oidc;
pub mod pkce;
pub mod policy;
pub mod refresh;
pub mod replay;
