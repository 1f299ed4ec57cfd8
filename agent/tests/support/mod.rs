//! Shared by the agent's integration tests: an ES256 key pair for minting ID tokens, the
//! fixed key store that trusts it (kid `k1`), and an audit sink that keeps request events.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_agent::authenticate::jwks::{KeyStore, VerifyKey};

/// A signing key and the key store that verifies its tokens.
pub struct TestSigningKey {
    /// Trusts exactly this key, under kid `k1`.
    pub keys: KeyStore,
    /// Signs tokens (ES256).
    pub signing: jsonwebtoken::EncodingKey,
}

/// A fresh P-256 key pair as a [`TestSigningKey`].
pub fn es256_signing_key() -> Result<TestSigningKey, Box<dyn std::error::Error + Send + Sync>> {
    let pair = rcgen::KeyPair::generate()?;
    let raw = pair.public_key_raw();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(serde_json::json!({
        "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
    }))?;
    Ok(TestSigningKey {
        keys: KeyStore::fixed(VerifyKey::from_jwk(&jwk).into_iter().collect()),
        signing: jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der()),
    })
}

/// An audit sink that keeps every request event.
#[derive(Default)]
pub struct RequestEvents(std::sync::Mutex<Vec<gatehouse_common::audit::ApiRequestEvent>>);

impl gatehouse_agent::audit::sink::AuditSink for RequestEvents {
    fn emit(&self, event: &gatehouse_common::audit::AuditEvent) {
        if let (gatehouse_common::audit::AuditEvent::ApiRequest(e), Ok(mut seen)) =
            (event, self.0.lock())
        {
            seen.push(e.clone());
        }
    }
}

// Each test binary compiles this module and uses only some of these.
#[allow(dead_code)]
impl RequestEvents {
    /// Every request event so far, in emission order.
    pub fn all(&self) -> Vec<gatehouse_common::audit::ApiRequestEvent> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The events for `path`.
    pub fn for_path(&self, path: &str) -> Vec<gatehouse_common::audit::ApiRequestEvent> {
        self.all().into_iter().filter(|e| e.path == path).collect()
    }

    /// Waits (bounded) until `path` has an event: the agent's side of a body may end a
    /// moment after the client's.
    pub async fn wait_for(&self, path: &str) -> Vec<gatehouse_common::audit::ApiRequestEvent> {
        for _ in 0..100 {
            let found = self.for_path(path);
            if !found.is_empty() {
                return found;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Vec::new()
    }

    /// Waits (bounded) until at least `n` events were emitted, and returns them all.
    pub async fn wait_for_count(&self, n: usize) -> Vec<gatehouse_common::audit::ApiRequestEvent> {
        for _ in 0..100 {
            let found = self.all();
            if found.len() >= n {
                return found;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.all()
    }
}

/// The policy of the agent's own tests, which are about proxying: every user may use
/// every verb except `impersonate` (client impersonation stays refused), on every resource,
/// subresource and non-resource path.
pub const ALLOW_ALL_POLICY: &str = r#"apiVersion: gatehouse.dev/v1
kind: Policy
rules:
  - name: test-allow-all
    subjects: {users: ["*"]}
    match:
      verbs: [get, list, watch, create, update, patch, delete, deletecollection]
      subresources: ["*"]
    action: allow
  - name: test-non-resource
    subjects: {users: ["*"]}
    match: {nonResourceURLs: ["*"]}
    action: allow
"#;

/// [`ALLOW_ALL_POLICY`] as the agent's active policy.
pub fn allow_all_policy() -> std::sync::Arc<gatehouse_agent::policy::ActivePolicy> {
    match gatehouse_common::policy::Policy::parse(ALLOW_ALL_POLICY) {
        Ok(policy) => gatehouse_agent::policy::ActivePolicy::fixed(policy),
        Err(err) => panic!("test policy invalid: {err}"),
    }
}
