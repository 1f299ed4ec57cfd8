//! Kubernetes API emulator, faithful where kubectl looks (see ARCHITECTURE.md).
//!
//! # Layout
//! - [`status`]: `metav1.Status` bodies and the HTTP responses that carry them.
//! - [`runtime`]: the "container runtime": real processes in kubelet-named cgroup v2
//!   directories, their logs, stdin and ttys.
//! - [`streams`]: `pods/exec`, `pods/attach`, `pods/portforward`, `pods/log` over
//!   WebSocket and SPDY/3.1.

pub mod runtime;
pub mod status;
pub mod streams;

/// Response body type used throughout the emulator.
pub type Body = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;

/// Wraps a complete byte buffer as a [`Body`].
pub fn full_body(bytes: impl Into<bytes::Bytes>) -> Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}
