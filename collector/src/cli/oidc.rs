//! The issuer's OpenID Connect metadata and token endpoint answers, as the `gatehouse` CLI
//! reads them: discovery, token responses, OAuth error bodies, the ID token's expiry.

use super::cache::CachedTokens;
use super::http::{HttpError, IssuerClient, Reply};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// Errors of the OIDC exchanges. Messages never contain token material.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// Talking to the issuer failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The issuer answered with an OAuth error (RFC 6749 section 5.2).
    #[error("issuer refused: {0}")]
    OAuth(OAuthError),
    /// The answer was not what the protocol says.
    #[error("unexpected answer from {url}: {reason}")]
    Protocol {
        /// Endpoint.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

/// An OAuth error body: `{"error": ..., "error_description": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OAuthError {
    /// Error code (`invalid_grant`, `authorization_pending`, ...).
    pub error: String,
    /// Human-readable description.
    #[serde(default)]
    pub error_description: Option<String>,
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error_description {
            Some(d) => write!(f, "{} ({d})", self.error),
            None => f.write_str(&self.error),
        }
    }
}

/// The parts of `/.well-known/openid-configuration` the CLI uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    /// Must equal the issuer URL asked for.
    pub issuer: String,
    /// Browser login (authorization code).
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    /// Code exchange, refresh, device polling.
    pub token_endpoint: String,
    /// RFC 8628 device authorization.
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
    /// PKCE methods; the CLI needs `S256`.
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
}

/// A successful token endpoint answer.
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    /// The ID token kubectl presents.
    #[serde(default)]
    pub id_token: Option<String>,
    /// Seconds the tokens live, if told.
    #[serde(default)]
    pub expires_in: Option<i64>,
    /// Refresh token, if issued.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

// Hand-written so a stray `{:?}` can never print a token.
impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("has_id_token", &self.id_token.is_some())
            .field("expires_in", &self.expires_in)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .finish()
    }
}

/// The device authorization answer (RFC 8628 section 3.2).
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceAuthorization {
    /// Secret the CLI polls with.
    pub device_code: String,
    /// Code the user enters.
    pub user_code: String,
    /// Where the user enters it.
    pub verification_uri: String,
    /// The same with the code filled in, if the issuer offers it.
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    /// Lifetime of the codes (seconds).
    pub expires_in: u64,
    /// Minimum polling interval (seconds, default 5).
    #[serde(default = "default_interval")]
    pub interval: u64,
}

fn default_interval() -> u64 {
    5
}

/// Fetches and checks the issuer's discovery document.
pub async fn discover(client: &IssuerClient, issuer: &str) -> Result<Discovery, OidcError> {
    let issuer = issuer.trim_end_matches('/');
    let url = format!("{issuer}/.well-known/openid-configuration");
    let reply = client.get(&url).await?;
    if !reply.status.is_success() {
        return Err(protocol(&url, format!("HTTP {}", reply.status)));
    }
    let d: Discovery =
        serde_json::from_slice(&reply.body).map_err(|e| protocol(&url, e.to_string()))?;
    // OIDC Discovery section 4.3: the document must be for the issuer asked about.
    if d.issuer.trim_end_matches('/') != issuer {
        return Err(protocol(
            &url,
            format!("it describes issuer {:?}, not {issuer:?}", d.issuer),
        ));
    }
    Ok(d)
}

fn protocol(url: &str, reason: String) -> OidcError {
    OidcError::Protocol {
        url: url.into(),
        reason,
    }
}

/// Parses a token endpoint reply: the tokens on 2xx, the OAuth error otherwise.
pub fn parse_token_reply(url: &str, reply: &Reply) -> Result<TokenResponse, OidcError> {
    if reply.status.is_success() {
        return serde_json::from_slice(&reply.body).map_err(|e| protocol(url, e.to_string()));
    }
    Err(parse_error(url, reply))
}

/// The OAuth error of a non-2xx reply (or a protocol error when there is none).
pub fn parse_error(url: &str, reply: &Reply) -> OidcError {
    match serde_json::from_slice::<OAuthError>(&reply.body) {
        Ok(e) => OidcError::OAuth(e),
        Err(_) => protocol(url, format!("HTTP {} without an OAuth error", reply.status)),
    }
}

/// POSTs `fields` to the token endpoint and parses the answer.
pub async fn token_request(
    client: &IssuerClient,
    token_endpoint: &str,
    fields: &[(&str, &str)],
) -> Result<TokenResponse, OidcError> {
    let reply = client.post_form(token_endpoint, fields).await?;
    parse_token_reply(token_endpoint, &reply)
}

/// What to cache from a token response. `previous_refresh` is kept when the issuer did not
/// rotate the refresh token (RFC 6749 section 6 allows either).
pub fn to_cached(
    issuer: &str,
    client_id: &str,
    resp: TokenResponse,
    previous_refresh: Option<String>,
    now: DateTime<Utc>,
) -> Result<CachedTokens, OidcError> {
    let Some(id_token) = resp.id_token else {
        return Err(protocol(
            issuer,
            "the token response has no id_token".into(),
        ));
    };
    let expires_at = match (jwt_expiry(&id_token), resp.expires_in) {
        (Some(exp), _) => exp,
        (None, Some(secs)) => now + chrono::Duration::seconds(secs),
        (None, None) => {
            return Err(protocol(
                issuer,
                "the id_token has no exp claim and the response no expires_in".into(),
            ));
        }
    };
    Ok(CachedTokens {
        issuer: issuer.trim_end_matches('/').to_string(),
        client_id: client_id.to_string(),
        id_token,
        expires_at,
        refresh_token: resp.refresh_token.or(previous_refresh),
    })
}

/// The `exp` claim of a JWT, read without verifying it: the agent verifies the token, the
/// CLI only needs to know when to refresh.
pub fn jwt_expiry(jwt: &str) -> Option<DateTime<Utc>> {
    #[derive(Deserialize)]
    struct Exp {
        exp: i64,
    }
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let exp: Exp = serde_json::from_slice(&bytes).ok()?;
    DateTime::from_timestamp(exp.exp, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn reply(status: u16, body: &str) -> anyhow::Result<Reply> {
        Ok(Reply {
            status: http::StatusCode::from_u16(status)?,
            body: Bytes::from(body.to_string()),
        })
    }

    fn jwt(claims: &str) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256"}"#),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    #[test]
    fn expiry_comes_from_the_id_token() -> anyhow::Result<()> {
        let now = Utc::now();
        let resp: TokenResponse = serde_json::from_str(&format!(
            r#"{{"id_token":"{}","expires_in":5,"refresh_token":"r2","token_type":"Bearer"}}"#,
            jwt(r#"{"exp":2000000000,"sub":"a"}"#)
        ))?;
        let t = to_cached("https://i/", "c", resp, Some("r1".into()), now)?;
        assert_eq!(t.expires_at.timestamp(), 2_000_000_000);
        assert_eq!(t.refresh_token.as_deref(), Some("r2"));
        assert_eq!(t.issuer, "https://i");
        Ok(())
    }

    #[test]
    fn expires_in_and_previous_refresh_are_fallbacks() -> anyhow::Result<()> {
        let now = Utc::now();
        let resp: TokenResponse = serde_json::from_str(r#"{"id_token":"opaque","expires_in":60}"#)?;
        let t = to_cached("https://i", "c", resp, Some("r1".into()), now)?;
        assert_eq!(t.expires_at, now + chrono::Duration::seconds(60));
        assert_eq!(t.refresh_token.as_deref(), Some("r1"));
        let resp: TokenResponse = serde_json::from_str(r#"{"id_token":"opaque"}"#)?;
        assert!(to_cached("https://i", "c", resp, None, now).is_err());
        let resp: TokenResponse = serde_json::from_str(r#"{"access_token":"x"}"#)?;
        assert!(to_cached("https://i", "c", resp, None, now).is_err());
        Ok(())
    }

    #[test]
    fn oauth_errors_are_parsed() -> anyhow::Result<()> {
        let r = reply(
            400,
            r#"{"error":"invalid_grant","error_description":"revoked"}"#,
        )?;
        match parse_token_reply("u", &r) {
            Err(OidcError::OAuth(e)) => {
                assert_eq!(e.error, "invalid_grant");
                assert_eq!(e.to_string(), "invalid_grant (revoked)");
            }
            other => anyhow::bail!("unexpected {other:?}"),
        }
        let r = reply(502, "<html>bad gateway</html>")?;
        assert!(matches!(
            parse_token_reply("u", &r),
            Err(OidcError::Protocol { .. })
        ));
        let r = reply(200, "not json")?;
        assert!(matches!(
            parse_token_reply("u", &r),
            Err(OidcError::Protocol { .. })
        ));
        Ok(())
    }

    #[test]
    fn debug_never_shows_tokens() -> anyhow::Result<()> {
        let resp: TokenResponse =
            serde_json::from_str(r#"{"id_token":"secret-a","refresh_token":"secret-b"}"#)?;
        assert!(!format!("{resp:?}").contains("secret"));
        Ok(())
    }

    #[test]
    fn device_answer_defaults_interval() -> anyhow::Result<()> {
        let d: DeviceAuthorization = serde_json::from_str(
            r#"{"device_code":"d","user_code":"U","verification_uri":"https://i/device","expires_in":600}"#,
        )?;
        assert_eq!(d.interval, 5);
        Ok(())
    }

    #[test]
    fn garbage_jwt_has_no_expiry() {
        assert_eq!(jwt_expiry("a.b.c"), None);
        assert_eq!(jwt_expiry("nodots"), None);
    }
}
