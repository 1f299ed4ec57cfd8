//! Shared by the agent's integration tests: an ES256 key pair for minting ID tokens and
//! the fixed key store that trusts it (kid `k1`).

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
