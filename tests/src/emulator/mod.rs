//! Kubernetes API emulator, faithful where kubectl looks (see ARCHITECTURE.md).
//!
//! # Layout
//! - [`api`]: the public handle ([`Emulator`], [`EmulatorConfig`]).
//! - [`server`]: TLS listener, h2 + HTTP/1.1 with upgrades; [`router`]: the request
//!   pipeline (authn → impersonation → RequestInfo → RBAC → dispatch → log).
//! - [`authn`], [`eks`] (EKS tokens, as aws-iam-authenticator), [`impersonation`], [`rbac`], [`request_info`], [`request_log`].
//! - [`discovery`], [`openapi`], [`resources`]: what the server says it serves.
//! - [`store`], [`objects`], [`handlers`], [`writes`], [`pods`], [`reviews`]: objects and CRUD.
//! - [`protobuf`]: decoding the protobuf bodies of kubectl's typed clients.
//! - [`selectors`], [`patch`], [`strategic`], [`table`], [`watch`]: list/patch/print/watch.
//! - [`seed`]: initial contents.
//! - [`status`]: `metav1.Status` bodies and the HTTP responses that carry them.
//! - [`runtime`]: the "container runtime": real processes in kubelet-named cgroup v2
//!   directories, their logs, stdin and ttys.
//! - [`streams`]: `pods/exec`, `pods/attach`, `pods/portforward`, `pods/log` over
//!   WebSocket and SPDY/3.1.

pub mod api;
pub mod authn;
pub mod context;
pub mod discovery;
pub mod eks;
pub mod handlers;
pub mod impersonation;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod pods;
pub mod protobuf;
pub mod rbac;
pub mod request_info;
pub mod request_log;
pub mod resources;
pub mod reviews;
pub mod router;
pub mod runtime;
pub mod seed;
pub mod selectors;
pub mod server;
pub mod status;
pub mod store;
pub mod strategic;
pub mod streams;
pub mod table;
pub mod watch;
pub mod writes;

pub use api::{Emulator, EmulatorConfig};
pub use authn::UserInfo;
pub use request_log::RequestRecord;
pub use runtime::RuntimeConfig;
pub use seed::Seed;

/// Response body type used throughout the emulator.
pub type Body = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;

/// Wraps a complete byte buffer as a [`Body`].
pub fn full_body(bytes: impl Into<bytes::Bytes>) -> Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}
