//! HTTP/1.1 upgrade handshakes: WebSocket (RFC 6455 + Kubernetes subprotocols) and
//! SPDY/3.1 (`X-Stream-Protocol-Version` negotiation), and the 101 responses.

use crate::emulator::{Body, full_body};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};

/// Which upgrade the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `Upgrade: websocket`.
    WebSocket,
    /// `Upgrade: SPDY/3.1`.
    Spdy,
    /// No upgrade (plain request).
    None,
}

/// Detects the requested upgrade.
pub fn transport<B>(req: &Request<B>) -> Transport {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if upgrade.eq_ignore_ascii_case("websocket") {
        Transport::WebSocket
    } else if upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        Transport::Spdy
    } else {
        Transport::None
    }
}

/// Subprotocols offered in `Sec-WebSocket-Protocol` (comma-separated, possibly repeated).
pub fn offered_ws_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Protocols offered in `X-Stream-Protocol-Version` headers, in preference order.
pub fn offered_spdy_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The first client protocol the server supports (client preference wins, like
/// apimachinery's `httpstream.Handshake`).
pub fn choose<'a>(offered: &[String], supported: &[&'a str]) -> Option<&'a str> {
    offered.iter().find_map(|o| {
        supported
            .iter()
            .find(|s| s.eq_ignore_ascii_case(o))
            .copied()
    })
}

/// 101 for a WebSocket upgrade with the chosen subprotocol.
pub fn websocket_101<B>(req: &Request<B>, protocol: Option<&str>) -> Option<Response<Body>> {
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY)?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = Response::new(full_body(Vec::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).ok()?,
    );
    if let Some(p) = protocol {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(p).ok()?,
        );
    }
    Some(resp)
}

/// 101 for a SPDY/3.1 upgrade with the chosen stream protocol.
pub fn spdy_101(protocol: &str) -> Response<Body> {
    let mut resp = Response::new(full_body(Vec::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    if let Ok(v) = HeaderValue::from_str(protocol) {
        h.insert("x-stream-protocol-version", v);
    }
    resp
}

/// 403 listing the server's protocols, as `httpstream.Handshake` answers a mismatch.
pub fn spdy_mismatch(offered: &[String], supported: &[&str]) -> Response<Body> {
    let mut resp = Response::new(full_body(format!(
        "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"
    )));
    *resp.status_mut() = StatusCode::FORBIDDEN;
    for s in supported {
        if let Ok(v) = HeaderValue::from_str(s) {
            resp.headers_mut()
                .append("x-accepted-stream-protocol-versions", v);
        }
    }
    resp
}
