//! OIDC ID-token verification: a Bearer token becomes an [`Identity`], or it is refused.
//! Shared by the agent (every kubectl request) and the collector (its query API).
//!
//! Checks, in order: size, header `alg` (asymmetric only: `none` and HS* are refused, so a
//! token "signed" with the public key as an HMAC secret never verifies), signing key by
//! `kid` ([`jwks`]), signature, `iss`, `aud`, `exp`/`nbf` with the configured skew, then the
//! username and groups claims with their prefixes. Verified tokens are cached by SHA-256
//! digest until they expire; tokens themselves are never logged or stored.

pub mod cache;
pub mod jwks;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use jwks::{JwksError, KeyStore};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How to verify ID tokens of one issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// Issuer URL; must equal the tokens' `iss` and serve `/.well-known/openid-configuration`.
    pub issuer_url: String,
    /// CA bundle (PEM) for the issuer's TLS certificate; system roots are not consulted.
    pub ca_file: Option<PathBuf>,
    /// Expected `aud` of the ID tokens (the OAuth client id).
    pub client_id: String,
    /// Claim that names the user (`sub` like the API server; `email` requires `email_verified`).
    pub username_claim: String,
    /// Claim holding the user's groups (a string or an array of strings); empty = no groups.
    pub groups_claim: String,
    /// Prepended to every username (e.g. `oidc:`), so IdP users can't collide with others.
    pub username_prefix: String,
    /// Prepended to every group name.
    pub groups_prefix: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub clock_skew: Duration,
    /// Minimum time between two JWKS fetches triggered by an unknown `kid`.
    pub jwks_min_refresh: Duration,
    /// Most verified tokens kept in the cache (by SHA-256 digest, until they expire).
    pub token_cache_max: usize,
    /// Interval of the background JWKS refresh (on top of refresh-on-unknown-kid).
    pub jwks_refresh_interval: Duration,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            issuer_url: String::new(),
            ca_file: None,
            client_id: "gatehouse".into(),
            username_claim: "sub".into(),
            groups_claim: "groups".into(),
            username_prefix: String::new(),
            groups_prefix: String::new(),
            clock_skew: Duration::from_secs(30),
            jwks_min_refresh: Duration::from_secs(10),
            token_cache_max: 10_000,
            jwks_refresh_interval: Duration::from_secs(300),
        }
    }
}

/// Longest bearer token accepted (ID tokens are a few KiB at most).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Algorithms accepted in a token header.
pub const ALLOWED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why a token was refused. Messages go back to the user, so they say what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error(
        "no bearer token in the request; gatehouse needs an OIDC ID token from your identity provider"
    )]
    MissingToken,
    /// Not a JWT, or unreadable parts.
    #[error("bearer token is not a valid JWT ({0})")]
    Malformed(&'static str),
    /// `alg` not in [`ALLOWED_ALGORITHMS`].
    #[error("token algorithm {0:?} is not accepted (asymmetric signatures only)")]
    Algorithm(String),
    /// No key with this `kid` at the issuer.
    #[error("token is signed by a key the issuer does not publish (kid {0:?})")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` is in the past.
    #[error("token has expired; get a new one from your identity provider")]
    Expired,
    /// `nbf` is in the future.
    #[error("token is not valid yet (nbf in the future; check the clock)")]
    NotYetValid,
    /// `iss` differs from the configured issuer.
    #[error("token was issued by another issuer than the one gatehouse trusts")]
    WrongIssuer,
    /// `aud` does not contain the client id.
    #[error("token audience does not include the gatehouse client id")]
    WrongAudience,
    /// A claim is missing or has the wrong type.
    #[error("token claim {0:?} is missing or malformed")]
    Claim(String),
    /// `email` used as the username but `email_verified` is false.
    #[error("token email is not verified")]
    EmailNotVerified,
    /// The mapped username is in the API server's reserved `system:` namespace.
    #[error("username {0:?} is reserved for Kubernetes system identities")]
    ReservedUsername(String),
    /// The issuer's keys could not be fetched.
    #[error("cannot verify tokens right now: {0}")]
    Keys(#[source] JwksError),
}

impl AuthError {
    /// A fixed, low-cardinality name for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Malformed(_) => "malformed",
            Self::Algorithm(_) => "algorithm",
            Self::UnknownKey(_) => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::Claim(_) => "claim",
            Self::EmailNotVerified => "email_not_verified",
            Self::ReservedUsername(_) => "reserved_username",
            Self::Keys(_) => "keys_unavailable",
        }
    }
}

/// Module result shorthand.
pub type Result<T> = std::result::Result<T, AuthError>;

/// Who made a request, as forwarded to the API server through impersonation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Username (with prefix).
    pub username: String,
    /// Groups (with prefix).
    pub groups: Vec<String>,
    /// `exp` of the token (seconds since the epoch).
    pub expires_at: u64,
    /// How the identity was proven (recorded in audit events).
    pub auth_method: crate::audit::AuthMethod,
}

/// The identity of a TLS client certificate the listener verified, put into the request
/// extensions; [`Authenticator::authenticate_request`] falls back to it.
#[derive(Debug, Clone)]
pub struct ClientCertIdentity(pub Arc<Identity>);

/// Told the [`AuthError::reason`] of each failed [`Authenticator::authenticate_request`].
pub type FailureHook = Arc<dyn Fn(&'static str) + Send + Sync>;

/// Verifies bearer tokens of one issuer.
pub struct Authenticator {
    config: OidcConfig,
    keys: Arc<KeyStore>,
    cache: cache::TokenCache,
    on_failure: Option<FailureHook>,
}

impl Authenticator {
    /// An authenticator for `config` that gets its keys from `keys`.
    pub fn new(config: OidcConfig, keys: KeyStore) -> Self {
        Self::with_shared_keys(config, Arc::new(keys))
    }

    /// An authenticator sharing `keys` with e.g. the periodic refresh and readiness check.
    pub fn with_shared_keys(config: OidcConfig, keys: Arc<KeyStore>) -> Self {
        let cache = cache::TokenCache::new(config.token_cache_max);
        Self {
            config,
            keys,
            cache,
            on_failure: None,
        }
    }

    /// Tells `hook` the reason of every failure of [`Self::authenticate_request`] (metrics).
    pub fn with_failure_hook(mut self, hook: FailureHook) -> Self {
        self.on_failure = Some(hook);
        self
    }

    /// The configuration tokens are checked against.
    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// Authenticates a request from its headers.
    pub async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Arc<Identity>> {
        let token = bearer_token(headers).ok_or(AuthError::MissingToken)?;
        self.verify(token).await
    }

    /// Authenticates a request: a bearer token wins (as at the API server); without one, a
    /// verified client certificate ([`ClientCertIdentity`] in the extensions) is used.
    pub async fn authenticate_request<B>(&self, req: &http::Request<B>) -> Result<Arc<Identity>> {
        if bearer_token(req.headers()).is_none()
            && let Some(ClientCertIdentity(identity)) = req.extensions().get::<ClientCertIdentity>()
        {
            return Ok(identity.clone());
        }
        let result = self.authenticate(req.headers()).await;
        if let (Err(err), Some(hook)) = (&result, &self.on_failure) {
            hook(err.reason());
        }
        result
    }

    /// Verifies one token (cache first).
    pub async fn verify(&self, token: &str) -> Result<Arc<Identity>> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed("too long"));
        }
        let digest = cache::digest(token);
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(identity) = self.cache.get(&digest, now) {
            return Ok(identity);
        }
        let (alg, kid) = header_alg_kid(token)?;
        let keys = self
            .keys
            .candidates(kid.as_deref(), alg)
            .await
            .map_err(AuthError::Keys)?;
        if keys.is_empty() {
            return Err(AuthError::UnknownKey(kid.unwrap_or_default()));
        }
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[self.config.issuer_url.as_str()]);
        validation.set_audience(&[self.config.client_id.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = self.config.clock_skew.as_secs();
        validation.validate_nbf = true;
        let mut last = AuthError::BadSignature;
        for key in &keys {
            match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
                Ok(data) => {
                    let identity = Arc::new(self.identity(&data.claims)?);
                    self.cache.insert(digest, identity.clone(), now);
                    return Ok(identity);
                }
                Err(err) => {
                    last = map_jwt_error(err.kind());
                    // Only a bad signature is worth trying the next key for.
                    if !matches!(last, AuthError::BadSignature) {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    fn identity(&self, claims: &Value) -> Result<Identity> {
        let claim = &self.config.username_claim;
        let name = claims
            .get(claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::Claim(claim.clone()))?;
        // The API server refuses an email username whose email_verified is false.
        if claim == "email"
            && let Some(verified) = claims.get("email_verified")
            && verified.as_bool() != Some(true)
        {
            return Err(AuthError::EmailNotVerified);
        }
        let username = format!("{}{name}", self.config.username_prefix);
        if username.starts_with("system:") {
            return Err(AuthError::ReservedUsername(username));
        }
        let groups = self.groups(claims)?;
        let expires_at = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        Ok(Identity {
            username,
            groups,
            expires_at,
            auth_method: crate::audit::AuthMethod::Oidc,
        })
    }

    fn groups(&self, claims: &Value) -> Result<Vec<String>> {
        let claim = &self.config.groups_claim;
        let raw: Vec<&str> = match claims.get(claim.as_str()) {
            _ if claim.is_empty() => Vec::new(),
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().ok_or_else(|| AuthError::Claim(claim.clone())))
                .collect::<Result<_>>()?,
            Some(_) => return Err(AuthError::Claim(claim.clone())),
        };
        let mut groups = Vec::with_capacity(raw.len());
        for group in raw {
            let group = format!("{}{group}", self.config.groups_prefix);
            // An IdP group must never grant a Kubernetes system group such as system:masters.
            if group.starts_with("system:") {
                tracing::warn!(group = %group, "dropping reserved group from OIDC token");
                continue;
            }
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
        Ok(groups)
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Reads `alg` and `kid` from the header, refusing anything not asymmetric.
fn header_alg_kid(token: &str) -> Result<(Algorithm, Option<String>)> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("expected three dot-separated parts"));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed("header is not base64url"))?;
    let header: Value =
        serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed("header is not JSON"))?;
    let alg_name = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(AuthError::Malformed("header has no alg"))?;
    let alg = alg_name
        .parse::<Algorithm>()
        .ok()
        .filter(|a| ALLOWED_ALGORITHMS.contains(a))
        .ok_or_else(|| AuthError::Algorithm(alg_name.to_string()))?;
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((alg, kid))
}

fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) => {
            AuthError::Claim(c.clone())
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            AuthError::Algorithm("mismatch".into())
        }
        ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            AuthError::Malformed("payload is not base64url JSON")
        }
        _ => AuthError::BadSignature,
    }
}

#[cfg(test)]
mod tests;
