//! `pods/exec`, `pods/attach`, `pods/portforward` and `pods/log`, over WebSocket
//! (`v5.channel.k8s.io`, `v4.channel.k8s.io`, `SPDY/3.1+portforward.k8s.io`) and SPDY/3.1.
//!
//! The hyper connection that carries the request must be served `.with_upgrades()`:
//! exec/attach/port-forward answer 101 and take over the connection via
//! `hyper::upgrade::on`.
//!
//! Port-forward connects pod port P to `127.0.0.1:P`, unless the runtime has a port map
//! for the pod ([`ContainerRuntime::set_port_map`], from the pod annotation
//! `emulator.gatehouse.dev/port-map: "80=18080,443=18443"`).
//!
//! # Layout
//! - [`query`]: query parameters and container selection.
//! - [`upgrade`]: WebSocket / SPDY handshakes and protocol negotiation.
//! - [`exec`]: the transport-independent exec/attach session and its status payloads.
//! - [`websocket`]: exec/attach over the WebSocket channel protocols.
//! - [`spdy_conn`]: a server SPDY/3.1 connection (built on `gatehouse_common::spdy`).
//! - [`spdy_exec`]: exec/attach over SPDY.
//! - [`portforward`]: SPDY port-forward; [`ws_tunnel`] carries it inside WebSocket;
//!   [`ws_portforward`] is the legacy channel form (`?ports=`).
//! - [`log`] serves `pods/log`.

pub mod exec;
pub mod log;
pub mod portforward;
pub mod query;
pub mod spdy_conn;
pub mod spdy_exec;
pub mod upgrade;
pub mod websocket;
pub mod ws_portforward;
pub mod ws_tunnel;

use super::runtime::{ContainerRuntime, PodSpec};
use super::{Body, status::ApiError};
use http::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use upgrade::Transport;

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
    match serve_inner(runtime, pod, stream, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn serve_inner(
    runtime: Arc<ContainerRuntime>,
    pod: PodSpec,
    stream: PodStream,
    mut req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, ApiError> {
    let q = query::parse(req.uri().query())?;
    match stream {
        PodStream::Log => {
            if req.method() != Method::GET {
                return Err(ApiError::method_not_allowed());
            }
            let container = query::container(&pod, q.container.as_deref())?.to_string();
            let log = runtime
                .log(&pod.uid, &container)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            Ok(log::serve(
                log,
                &q,
                &pod.name,
                &container,
                runtime.log_chunk_bytes(),
            ))
        }
        PodStream::Exec | PodStream::Attach => {
            let container = query::container(&pod, q.container.as_deref())?.to_string();
            let command = if stream == PodStream::Exec {
                if q.command.is_empty() {
                    return Err(ApiError::bad_request(
                        "you must specify at least one command for the container",
                    ));
                }
                Some(q.command.clone())
            } else {
                None
            };
            if !(q.stdin || q.stdout || q.stderr) {
                return Err(ApiError::bad_request(
                    "you must specify at least 1 of stdin, stdout, stderr",
                ));
            }
            let spec = exec::SessionSpec {
                pod_uid: pod.uid.clone(),
                container,
                command,
                stdin: q.stdin,
                stdout: q.stdout,
                stderr: q.stderr,
                tty: q.tty,
            };
            match upgrade::transport(&req) {
                Transport::WebSocket => {
                    let offered = upgrade::offered_ws_protocols(req.headers());
                    // No acceptable subprotocol: a non-101 makes kubectl fall back to SPDY.
                    let Some(chosen) = upgrade::choose(&offered, websocket::PROTOCOLS) else {
                        return Err(ApiError::bad_request(format!(
                            "unable to upgrade: no supported subprotocol in {offered:?}"
                        )));
                    };
                    let resp = upgrade::websocket_101(&req, Some(chosen))
                        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?;
                    let on = hyper::upgrade::on(&mut req);
                    let dialect = websocket::Dialect::of(Some(chosen));
                    tokio::spawn(async move {
                        match on.await {
                            Ok(up) => {
                                let ws = WebSocketStream::from_raw_socket(
                                    TokioIo::new(up),
                                    Role::Server,
                                    None,
                                )
                                .await;
                                websocket::run(ws, dialect, runtime, spec).await;
                            }
                            Err(e) => tracing::warn!(error = %e, "websocket upgrade failed"),
                        }
                    });
                    Ok(resp)
                }
                Transport::Spdy => {
                    let offered = upgrade::offered_spdy_protocols(req.headers());
                    let Some(chosen) = upgrade::choose(&offered, spdy_exec::PROTOCOLS) else {
                        return Ok(upgrade::spdy_mismatch(&offered, spdy_exec::PROTOCOLS));
                    };
                    let on = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        match on.await {
                            Ok(up) => spdy_exec::run(TokioIo::new(up), chosen, runtime, spec).await,
                            Err(e) => tracing::warn!(error = %e, "spdy upgrade failed"),
                        }
                    });
                    Ok(upgrade::spdy_101(chosen))
                }
                Transport::None => Err(ApiError::bad_request("Upgrade request required")),
            }
        }
        PodStream::PortForward => match upgrade::transport(&req) {
            Transport::WebSocket => {
                let offered = upgrade::offered_ws_protocols(req.headers());
                if !offered.iter().any(|p| p == ws_tunnel::PROTOCOL) {
                    return legacy_ws_portforward(runtime, pod, q.ports, offered, req);
                }
                let resp = upgrade::websocket_101(&req, Some(ws_tunnel::PROTOCOL))
                    .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?;
                let on = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    match on.await {
                        Ok(up) => {
                            let ws = WebSocketStream::from_raw_socket(
                                TokioIo::new(up),
                                Role::Server,
                                None,
                            )
                            .await;
                            portforward::run(ws_tunnel::bridge(ws), runtime, pod).await;
                        }
                        Err(e) => tracing::warn!(error = %e, "websocket upgrade failed"),
                    }
                });
                Ok(resp)
            }
            Transport::Spdy => {
                let offered = upgrade::offered_spdy_protocols(req.headers());
                let Some(chosen) = upgrade::choose(&offered, &[portforward::PROTOCOL]) else {
                    return Ok(upgrade::spdy_mismatch(&offered, &[portforward::PROTOCOL]));
                };
                let on = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    match on.await {
                        Ok(up) => portforward::run(TokioIo::new(up), runtime, pod).await,
                        Err(e) => tracing::warn!(error = %e, "spdy upgrade failed"),
                    }
                });
                Ok(upgrade::spdy_101(chosen))
            }
            Transport::None => Err(ApiError::bad_request("Upgrade request required")),
        },
    }
}

/// `?ports=` over the v4/v1 channel protocols (no subprotocol offered means v1).
fn legacy_ws_portforward(
    runtime: Arc<ContainerRuntime>,
    pod: PodSpec,
    ports: Vec<u16>,
    offered: Vec<String>,
    mut req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, ApiError> {
    if ports.is_empty() {
        return Err(ApiError::bad_request(
            "query parameter \"port\" is required",
        ));
    }
    let chosen = if offered.is_empty() {
        None
    } else {
        Some(
            upgrade::choose(&offered, ws_portforward::PROTOCOLS).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unable to upgrade: no supported subprotocol in {offered:?}"
                ))
            })?,
        )
    };
    let resp = upgrade::websocket_101(&req, chosen)
        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?;
    let on = hyper::upgrade::on(&mut req);
    let dialect = websocket::Dialect::of(chosen);
    tokio::spawn(async move {
        match on.await {
            Ok(up) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, None).await;
                ws_portforward::run(ws, dialect, runtime, pod, ports).await;
            }
            Err(e) => tracing::warn!(error = %e, "websocket upgrade failed"),
        }
    });
    Ok(resp)
}
