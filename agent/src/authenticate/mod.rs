//! Authentication: a Bearer OIDC ID token becomes an [`Identity`], or the request is refused.
//!
//! The verifier itself lives in [`gatehouse_common::oidc`] (the collector's query API uses
//! it too); it is re-exported here so `crate::authenticate::*` paths keep working. Only the
//! client-certificate mapping is agent-specific.

pub mod client_cert;

pub use client_cert::ClientCertIdentity;
pub use gatehouse_common::oidc::{
    ALLOWED_ALGORITHMS, AuthError, Authenticator, FailureHook, Identity, Result, bearer_token,
    cache, jwks,
};
