//! Agent authentication by service-account token: the bearer token an agent presents is
//! checked with a `TokenReview` at the Kubernetes API server (one small HTTPS call per
//! ingest stream; streams are long-lived). Only the configured agent service accounts are
//! accepted. The token is never logged.

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The `extra` key a bound service-account token carries its node name under.
const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// Where and how to ask for TokenReviews.
#[derive(Debug, Clone)]
pub struct TokenReviewConfig {
    /// API server base URL, e.g. `https://kubernetes.default.svc`.
    pub api_server: String,
    /// CA of the API server's certificate.
    pub ca_file: PathBuf,
    /// The collector's own bearer token (re-read for every review, so a rotated projected
    /// token is picked up). It needs `create` on `tokenreviews` (system:auth-delegator).
    pub token_file: PathBuf,
    /// Accepted agent identities, as `namespace:name` of service accounts.
    pub agent_service_accounts: Vec<String>,
    /// Bound on one review.
    pub timeout: Duration,
}

/// Why a token gives no agent identity.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The API server says the token is not valid.
    #[error("token not authenticated: {0}")]
    Unauthenticated(String),
    /// Valid, but not one of the agent service accounts.
    #[error("user {0:?} is not an agent service account")]
    NotAnAgent(String),
    /// The review itself failed (API server unreachable, refused, or nonsense): the
    /// request is refused too (fail closed) but may be retried.
    #[error("TokenReview failed: {0}")]
    Unavailable(String),
}

/// Settings that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("TokenReview settings: {0}")]
pub struct ReviewConfigError(String);

/// An agent authenticated by token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAgent {
    /// The service-account user name.
    pub username: String,
    /// The node the token is bound to, when the API server says (then batches must name
    /// it); `None` for tokens without that binding.
    pub node: Option<String>,
}

/// Asks the API server about bearer tokens.
pub struct TokenReviewer {
    config: TokenReviewConfig,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    allowed: Vec<String>,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn roots(path: &Path) -> Result<rustls::RootCertStore, ReviewConfigError> {
    let err = |e: &dyn std::fmt::Display| ReviewConfigError(format!("{}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(err(&"no CA certificate"));
    }
    Ok(roots)
}

impl TokenReviewer {
    /// A reviewer for `config` (reads the CA now; the token on every review).
    pub fn new(config: TokenReviewConfig) -> Result<Self, ReviewConfigError> {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ReviewConfigError(e.to_string()))?
        .with_root_certificates(roots(&config.ca_file)?)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let allowed = config
            .agent_service_accounts
            .iter()
            .map(|sa| format!("system:serviceaccount:{sa}"))
            .collect();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            config,
            allowed,
        })
    }

    /// Reviews `token`.
    pub async fn review(&self, token: &str) -> Result<TokenAgent, ReviewError> {
        match tokio::time::timeout(self.config.timeout, self.call(token)).await {
            Ok(r) => r,
            Err(_) => Err(ReviewError::Unavailable(format!(
                "no answer within {:?}",
                self.config.timeout
            ))),
        }
    }

    async fn call(&self, token: &str) -> Result<TokenAgent, ReviewError> {
        let own = std::fs::read_to_string(&self.config.token_file).map_err(|e| {
            ReviewError::Unavailable(format!("reading {}: {e}", self.config.token_file.display()))
        })?;
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        });
        let url = format!(
            "{}/apis/authentication.k8s.io/v1/tokenreviews",
            self.config.api_server.trim_end_matches('/')
        );
        let req = Request::post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {}", own.trim()))
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| ReviewError::Unavailable(e.to_string()))?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| ReviewError::Unavailable(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ReviewError::Unavailable(e.to_string()))?
            .to_bytes();
        if status != StatusCode::CREATED && status != StatusCode::OK {
            return Err(ReviewError::Unavailable(format!(
                "API server answered {status}"
            )));
        }
        let review: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ReviewError::Unavailable(format!("bad TokenReview answer: {e}")))?;
        self.judge(&review)
    }

    /// The agent a TokenReview answer names, if it is one.
    fn judge(&self, review: &Value) -> Result<TokenAgent, ReviewError> {
        let status = review.get("status").cloned().unwrap_or(Value::Null);
        if status.get("authenticated").and_then(Value::as_bool) != Some(true) {
            let why = status
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("not authenticated");
            return Err(ReviewError::Unauthenticated(why.to_string()));
        }
        let username = status
            .pointer("/user/username")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !self.allowed.contains(&username) {
            return Err(ReviewError::NotAnAgent(username));
        }
        let node = status
            .pointer(&format!(
                "/user/extra/{}",
                NODE_NAME_EXTRA.replace('/', "~1")
            ))
            .and_then(|v| v.get(0))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        Ok(TokenAgent { username, node })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reviewer(dir: &Path) -> Result<TokenReviewer, Box<dyn std::error::Error>> {
        let ca = dir.join("ca.crt");
        // Any parsable CA certificate will do: no test here completes a handshake.
        std::fs::write(&ca, include_str!("testdata/ca.crt"))?;
        std::fs::write(dir.join("token"), "collector-token\n")?;
        Ok(TokenReviewer::new(TokenReviewConfig {
            api_server: "https://127.0.0.1:1".into(),
            ca_file: ca,
            token_file: dir.join("token"),
            agent_service_accounts: vec!["gatehouse:gatehouse-agent".into()],
            timeout: Duration::from_secs(1),
        })?)
    }

    #[test]
    fn answers_are_judged() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let r = reviewer(dir.path())?;
        let ok = json!({"status": {"authenticated": true, "user": {
            "username": "system:serviceaccount:gatehouse:gatehouse-agent",
            "extra": {"authentication.kubernetes.io/node-name": ["node-a"]}}}});
        assert_eq!(r.judge(&ok)?.node.as_deref(), Some("node-a"));
        let unbound = json!({"status": {"authenticated": true, "user": {
            "username": "system:serviceaccount:gatehouse:gatehouse-agent"}}});
        assert_eq!(r.judge(&unbound)?.node, None);
        let other = json!({"status": {"authenticated": true, "user": {
            "username": "system:serviceaccount:default:default"}}});
        assert!(matches!(r.judge(&other), Err(ReviewError::NotAnAgent(_))));
        let bad = json!({"status": {"authenticated": false, "error": "expired"}});
        assert!(matches!(r.judge(&bad), Err(ReviewError::Unauthenticated(e)) if e == "expired"));
        assert!(matches!(
            r.judge(&json!({})),
            Err(ReviewError::Unauthenticated(_))
        ));
        Ok(())
    }

    #[tokio::test]
    async fn unreachable_api_server_is_unavailable() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let r = reviewer(dir.path())?;
        assert!(matches!(
            r.review("t").await,
            Err(ReviewError::Unavailable(_))
        ));
        Ok(())
    }
}
