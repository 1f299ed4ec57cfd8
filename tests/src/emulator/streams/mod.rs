//! `pods/exec`, `pods/attach`, `pods/portforward` and `pods/log`, over WebSocket
//! (`v5.channel.k8s.io`, `v4.channel.k8s.io`, `SPDY/3.1+portforward.k8s.io`) and SPDY/3.1.

use super::runtime::{ContainerRuntime, PodSpec};
use super::{Body, status::ApiError};
use http::{Request, Response};
use std::sync::Arc;

/// Pod subresources served here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodStream {
    /// `pods/exec`.
    Exec,
    /// `pods/attach`.
    Attach,
    /// `pods/portforward`.
    PortForward,
    /// `pods/log`.
    Log,
}

/// Serves one pod stream request. The API layer has already authenticated and
/// authorized the caller and found the pod; this parses the query (container, command,
/// stdin/stdout/stderr/tty, ports, follow, …), performs the upgrade and runs the session.
///
/// CONTRACT: the API layer calls exactly this.
pub async fn serve(
    runtime: Arc<ContainerRuntime>,
    pod: PodSpec,
    stream: PodStream,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let _ = (runtime, pod, stream, req);
    ApiError::new(501, "NotImplemented", "pod streams are not implemented yet").into_response()
}
