//! The issuer's signing keys: OIDC discovery, JWKS fetch, lookup by `kid`, rate-limited refresh.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, RwLock};

/// Largest discovery or JWKS document accepted.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Limit for one discovery or JWKS fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors fetching the issuer's keys.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The HTTP exchange failed.
    #[error("fetching {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong (already formatted; hyper's chain is long).
        reason: String,
    },
    /// The document is not what OIDC discovery or RFC 7517 describe.
    #[error("invalid document at {url}: {reason}")]
    Invalid {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One verification key.
#[derive(Clone)]
pub struct VerifyKey {
    /// `kid`, if the JWK has one.
    pub kid: Option<String>,
    /// `alg`, if the JWK pins one.
    pub alg: Option<Algorithm>,
    /// Key family (RSA, EC, Ed); never HMAC.
    pub family: AlgorithmFamily,
    /// The key itself.
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    /// Builds a key from a JWK; `None` for symmetric, encryption-only or unusable keys.
    pub fn from_jwk(jwk: &Jwk) -> Option<Self> {
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            return None;
        }
        let family = match jwk.algorithm {
            AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
            AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
            AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
            // A symmetric key in a public JWKS would let anyone who reads it sign tokens.
            _ => return None,
        };
        let alg = match jwk.common.key_algorithm {
            Some(a) => Some(a.to_string().parse::<Algorithm>().ok()?),
            None => None,
        };
        Some(Self {
            kid: jwk.common.key_id.clone(),
            alg,
            family,
            key: DecodingKey::from_jwk(jwk).ok()?,
        })
    }

    fn fits(&self, kid: Option<&str>, alg: Algorithm) -> bool {
        let kid_ok = match kid {
            Some(kid) => self.kid.as_deref() == Some(kid),
            None => true,
        };
        kid_ok && self.family == alg.family() && self.alg.is_none_or(|a| a == alg)
    }
}

/// Parses a JWKS document, keeping the keys usable for signature verification.
pub fn parse_jwks(doc: &serde_json::Value) -> Option<Vec<VerifyKey>> {
    let keys = doc.get("keys")?.as_array()?;
    Some(
        keys.iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
            .filter_map(|jwk| VerifyKey::from_jwk(&jwk))
            .collect(),
    )
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

enum Source {
    /// Keys fixed at construction (tests, air-gapped setups).
    Static,
    /// Keys discovered from the issuer.
    Remote {
        issuer: String,
        client: Box<HttpsClient>,
    },
}

struct State {
    keys: Arc<Vec<VerifyKey>>,
    fetched_at: Option<Instant>,
}

/// The cached key set of one issuer.
pub struct KeyStore {
    source: Source,
    min_refresh: Duration,
    state: RwLock<State>,
    refresh: Mutex<()>,
    on_refresh: RwLock<Option<RefreshHook>>,
}

/// Told about the outcome of each periodic JWKS refresh.
pub type RefreshHook = Box<dyn Fn(bool) + Send + Sync>;

impl KeyStore {
    /// A store that never fetches.
    pub fn fixed(keys: Vec<VerifyKey>) -> Self {
        Self::new(Source::Static, Some(keys), Duration::MAX)
    }

    /// A store that discovers `issuer`'s JWKS over HTTPS with `tls`, fetching lazily.
    pub fn remote(issuer: &str, tls: rustls::ClientConfig, min_refresh: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client = Box::new(Client::builder(TokioExecutor::new()).build(connector));
        let source = Source::Remote {
            issuer: issuer.trim_end_matches('/').to_string(),
            client,
        };
        Self::new(source, None, min_refresh)
    }

    fn new(source: Source, keys: Option<Vec<VerifyKey>>, min_refresh: Duration) -> Self {
        let fetched_at = keys.as_ref().map(|_| Instant::now());
        Self {
            source,
            min_refresh,
            state: RwLock::new(State {
                keys: Arc::new(keys.unwrap_or_default()),
                fetched_at,
            }),
            refresh: Mutex::new(()),
            on_refresh: RwLock::new(None),
        }
    }

    /// Keys that may have signed a token with this `kid` and `alg`. An unknown `kid`
    /// triggers one refetch, at most once per `min_refresh` (a flood of forged `kid`s
    /// must not become a flood of requests to the IdP).
    pub async fn candidates(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<VerifyKey>, JwksError> {
        let matching = |keys: &[VerifyKey]| -> Vec<VerifyKey> {
            keys.iter().filter(|k| k.fits(kid, alg)).cloned().collect()
        };
        let keys = self.state.read().await.keys.clone();
        let found = matching(&keys);
        if !found.is_empty() || matches!(self.source, Source::Static) {
            return Ok(found);
        }
        let _guard = self.refresh.lock().await;
        // Someone else may have refreshed while we waited.
        let (keys, fetched_at) = {
            let state = self.state.read().await;
            (state.keys.clone(), state.fetched_at)
        };
        let found = matching(&keys);
        if !found.is_empty() || fetched_at.is_some_and(|t| t.elapsed() < self.min_refresh) {
            return Ok(found);
        }
        let fresh = self.fetch().await?;
        let found = matching(&fresh);
        let mut state = self.state.write().await;
        state.keys = Arc::new(fresh);
        state.fetched_at = Some(Instant::now());
        Ok(found)
    }

    /// Whether keys were loaded at least once (always true for a fixed store).
    pub async fn loaded(&self) -> bool {
        matches!(self.source, Source::Static) || self.state.read().await.fetched_at.is_some()
    }

    /// Fetches the key set now and replaces the cached one; on failure the last good keys
    /// stay in use (an IdP outage must not lock everyone out of tokens already issued).
    pub async fn refresh_now(&self) -> Result<usize, JwksError> {
        if matches!(self.source, Source::Static) {
            return Ok(self.state.read().await.keys.len());
        }
        let _guard = self.refresh.lock().await;
        let fresh = self.fetch().await?;
        let count = fresh.len();
        let mut state = self.state.write().await;
        state.keys = Arc::new(fresh);
        state.fetched_at = Some(Instant::now());
        Ok(count)
    }

    /// Refreshes every `interval` (first fetch right away, so readiness turns green
    /// without waiting for a token), forever; spawn it. Picks up keys an IdP publishes
    /// before it signs with them, and retires keys it withdrew.
    pub async fn refresh_every(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval.max(Duration::from_secs(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let outcome = self.refresh_now().await;
            if let Some(hook) = &*self.on_refresh.read().await {
                hook(outcome.is_ok());
            }
            if let Err(err) = outcome {
                tracing::warn!(error = %err, "periodic JWKS refresh failed; keeping the last good keys");
            }
        }
    }

    /// Registers a callback told about each periodic refresh (`true` = success); metrics use it.
    pub async fn set_refresh_hook(&self, hook: RefreshHook) {
        *self.on_refresh.write().await = Some(hook);
    }

    async fn fetch(&self) -> Result<Vec<VerifyKey>, JwksError> {
        let Source::Remote { issuer, client } = &self.source else {
            return Ok(Vec::new());
        };
        let discovery_url = format!("{issuer}/.well-known/openid-configuration");
        let discovery = get_json(client, &discovery_url).await?;
        let invalid = |url: &str, reason: &str| JwksError::Invalid {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        // OIDC Discovery 1.0 §4.3: the issuer in the document must be the one we asked.
        let doc_issuer = discovery.get("issuer").and_then(|v| v.as_str());
        if doc_issuer.map(|s| s.trim_end_matches('/')) != Some(issuer.as_str()) {
            return Err(invalid(
                &discovery_url,
                "issuer does not match --oidc-issuer-url",
            ));
        }
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or_else(|| invalid(&discovery_url, "no jwks_uri"))?;
        let jwks = get_json(client, jwks_uri).await?;
        let keys = parse_jwks(&jwks).ok_or_else(|| invalid(jwks_uri, "no keys array"))?;
        tracing::info!(issuer = %issuer, keys = keys.len(), "fetched OIDC signing keys");
        Ok(keys)
    }
}

async fn get_json(client: &HttpsClient, url: &str) -> Result<serde_json::Value, JwksError> {
    let fail = |reason: String| JwksError::Fetch {
        url: url.to_string(),
        reason,
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| fail(e.to_string()))?;
    let req = http::Request::get(uri)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|e| fail(e.to_string()))?;
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| fail(error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(fail(format!("HTTP {}", resp.status())));
        }
        let body = Limited::new(resp.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| fail(format!("not JSON: {e}")))
    };
    tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| fail("timed out".into()))?
}

/// `a: b: c` from an error and its sources.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn symmetric_and_encryption_keys_are_dropped() {
        let doc = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "sig", "alg": "ES256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "weird"}
        ]});
        let keys = parse_jwks(&doc).unwrap_or_default();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("sig"));
        assert!(keys[0].fits(Some("sig"), Algorithm::ES256));
        assert!(!keys[0].fits(Some("sig"), Algorithm::ES384));
        assert!(!keys[0].fits(Some("other"), Algorithm::ES256));
        assert!(!keys[0].fits(Some("sig"), Algorithm::RS256));
    }
}
