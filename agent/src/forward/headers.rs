//! Header rewriting between kubectl and the API server: what is stripped and what is added.

use crate::authenticate::Identity;
use http::{HeaderMap, HeaderName, HeaderValue, header};

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded as they are. Parsed names, so
/// that removing them (twice per request) does not parse nine strings each time.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The first client-sent `Impersonate-*` header, if any (e.g. from `kubectl --as`).
pub fn client_impersonation(headers: &HeaderMap) -> Option<&HeaderName> {
    headers
        .keys()
        .find(|name| name.as_str().starts_with("impersonate-"))
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most requests and responses carry no `Connection` header: nothing to collect then.
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<String> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        for name in &named {
            headers.remove(name.as_str());
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Rewrites a client request's headers for the API server: the client's credential, any
/// `Impersonate-*`, hop-by-hop headers and `Host` go; the agent's own credential and the
/// verified identity as `Impersonate-User`/`Impersonate-Group` come in. For an upgrade
/// request, `Connection: Upgrade` and the client's `Upgrade` value are kept.
pub fn rewrite_request(
    headers: &mut HeaderMap,
    identity: &Identity,
    upstream_token: Option<&str>,
    upgrade: Option<HeaderValue>,
) -> Result<(), http::header::InvalidHeaderValue> {
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    headers.remove(header::AUTHORIZATION);
    let impersonation: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("impersonate-"))
        .cloned()
        .collect();
    for name in impersonation {
        headers.remove(name);
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
    if let Some(token) = upstream_token {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))?;
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
    }
    headers.insert(
        "impersonate-user",
        HeaderValue::from_str(&identity.username)?,
    );
    for group in &identity.groups {
        headers.append("impersonate-group", HeaderValue::from_str(group)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            username: "alice@example.com".into(),
            groups: vec!["engineers".into(), "oncall".into()],
            expires_at: 0,
            auth_method: gatehouse_common::audit::AuthMethod::Oidc,
        }
    }

    fn client_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer client-id-token"),
            ("impersonate-user", "admin"),
            ("impersonate-group", "system:masters"),
            ("impersonate-uid", "0"),
            ("impersonate-extra-scopes", "all"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic x"),
            ("te", "trailers"),
            ("host", "127.0.0.1:8443"),
            ("accept", "application/json"),
            ("user-agent", "kubectl/v1.32"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn client_credentials_and_impersonation_are_replaced() -> Result<(), Box<dyn std::error::Error>>
    {
        let mut h = client_headers();
        assert!(client_impersonation(&h).is_some());
        rewrite_request(&mut h, &identity(), Some("agent-sa-token"), None)?;
        assert_eq!(
            h.get("authorization"),
            Some(&HeaderValue::from_static("Bearer agent-sa-token"))
        );
        assert_eq!(h.get_all("impersonate-user").iter().count(), 1);
        assert_eq!(
            h.get("impersonate-user"),
            Some(&HeaderValue::from_static("alice@example.com"))
        );
        let groups: Vec<_> = h.get_all("impersonate-group").iter().collect();
        assert_eq!(groups, vec!["engineers", "oncall"]);
        for gone in [
            "impersonate-uid",
            "impersonate-extra-scopes",
            "connection",
            "x-secret-hop",
            "keep-alive",
            "proxy-authorization",
            "te",
            "host",
        ] {
            assert!(!h.contains_key(gone), "{gone} should be stripped");
        }
        assert_eq!(
            h.get("accept"),
            Some(&HeaderValue::from_static("application/json"))
        );
        assert_eq!(
            h.get("user-agent"),
            Some(&HeaderValue::from_static("kubectl/v1.32"))
        );
        Ok(())
    }

    #[test]
    fn upgrade_headers_survive_for_upgrades() -> Result<(), Box<dyn std::error::Error>> {
        let mut h = client_headers();
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("v5.channel.k8s.io"),
        );
        rewrite_request(
            &mut h,
            &identity(),
            None,
            Some(HeaderValue::from_static("websocket")),
        )?;
        assert_eq!(
            h.get("connection"),
            Some(&HeaderValue::from_static("Upgrade"))
        );
        assert_eq!(
            h.get("upgrade"),
            Some(&HeaderValue::from_static("websocket"))
        );
        assert!(h.contains_key("sec-websocket-protocol"));
        assert!(!h.contains_key("authorization"));
        Ok(())
    }

    #[test]
    fn no_impersonation_means_none_found() {
        let mut h = HeaderMap::new();
        h.insert("accept", HeaderValue::from_static("*/*"));
        assert!(client_impersonation(&h).is_none());
    }
}
