//! HTTP/1.1 Upgrade relay (exec, attach, port-forward over WebSocket or SPDY): the 101 and
//! its headers go back to kubectl unchanged, then [`super::session`] relays the bytes.

use super::session::{self, SessionStart, Sessions, negotiated_protocol};
use crate::{Body, full_body};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// The `Upgrade` header value if `req` asks for a protocol upgrade.
pub fn requested_upgrade<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != http::Version::HTTP_11 {
        return None;
    }
    let connection_upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return None;
    }
    req.headers().get(header::UPGRADE).cloned()
}

/// Answers kubectl with the upstream's 101 and, as a tracked session task, joins the two
/// upgraded connections once both sides are ready and relays between them (see
/// [`super::session`]). `request_id` tags the session's log; `session` carries the
/// template of its `SessionEnd` event.
pub fn relay(
    client: OnUpgrade,
    mut upstream: Response<hyper::body::Incoming>,
    request_id: String,
    mut session: Option<SessionStart>,
    sessions: &Sessions,
) -> Response<Body> {
    let protocol = negotiated_protocol(upstream.headers());
    // A session its tap cannot follow (recording) is refused rather than relayed blind.
    if let Some(tap) = session.as_mut().and_then(|s| s.tap.as_mut())
        && let Err(err) = tap.upgraded(upstream.headers())
    {
        tracing::warn!(request_id = %request_id, error = %err, "session refused by its tap");
        let message = format!("gatehouse cannot record this session: {err}");
        session::upgrade_failed(session, protocol, request_id, &format!("tap: {err}"));
        return crate::status::ProxyError::Forbidden(message).into_response();
    }
    let upstream_upgrade = hyper::upgrade::on(&mut upstream);
    let goodbye = session::Goodbye::for_upgrade(upstream.headers());
    let shutdown = sessions.shutdown_token();
    sessions.spawn(async move {
        let joined = tokio::select! {
            joined = async { tokio::try_join!(client, upstream_upgrade) } => joined,
            () = shutdown.cancelled() => {
                session::upgrade_failed(session, protocol, request_id, "agent shutting down");
                return;
            }
        };
        let (client, upstream) = match joined {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(request_id = %request_id, error = %err, "upgrade failed");
                session::upgrade_failed(session, protocol, request_id, &err.to_string());
                return;
            }
        };
        session::relay_streams(
            TokioIo::new(client),
            TokioIo::new(upstream),
            session,
            protocol,
            request_id,
            shutdown,
            goodbye,
        )
        .await;
    });
    let mut resp = Response::new(full_body(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *resp.headers_mut() = upgrade_response_headers(upstream.headers());
    resp
}

/// Response headers of a 101: everything the upstream sent (subprotocol, accept key, ...).
fn upgrade_response_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut headers = upstream.clone();
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_detection() -> Result<(), http::Error> {
        let req = Request::get("/x")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .body(())?;
        assert_eq!(
            requested_upgrade(&req),
            Some(HeaderValue::from_static("websocket"))
        );
        let req = Request::get("/x").header("upgrade", "websocket").body(())?;
        assert_eq!(requested_upgrade(&req), None);
        let req = Request::get("/x")
            .version(http::Version::HTTP_2)
            .header("connection", "upgrade")
            .header("upgrade", "SPDY/3.1")
            .body(())?;
        assert_eq!(requested_upgrade(&req), None);
        Ok(())
    }
}
