//! Token verification against an in-memory key set: each way a token can be wrong.

use super::jwks::{KeyStore, VerifyKey};
use super::*;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

const ISSUER: &str = "https://issuer.test";

struct Signer {
    kid: String,
    key: EncodingKey,
    jwk: Jwk,
    public_raw: Vec<u8>,
}

fn signer(kid: &str) -> std::result::Result<Signer, rcgen::Error> {
    let pair = rcgen::KeyPair::generate()?;
    let raw = pair.public_key_raw().to_vec();
    let jwk: Jwk = serde_json::from_value(json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
    }))
    .map_err(|_| rcgen::Error::CouldNotParseKeyPair)?;
    Ok(Signer {
        kid: kid.into(),
        key: EncodingKey::from_ec_der(&pair.serialize_der()),
        jwk,
        public_raw: raw,
    })
}

fn authenticator(signer: &Signer) -> Authenticator {
    let keys = VerifyKey::from_jwk(&signer.jwk).into_iter().collect();
    let config = OidcConfig {
        issuer_url: ISSUER.into(),
        username_claim: "email".into(),
        username_prefix: "oidc:".into(),
        ..OidcConfig::default()
    };
    Authenticator::new(config, KeyStore::fixed(keys))
}

fn claims(overrides: Value) -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    let mut base = json!({
        "iss": ISSUER, "aud": "gatehouse", "sub": "u-1", "email": "alice@example.com",
        "email_verified": true, "groups": ["engineers", "system:masters"],
        "iat": now, "nbf": now, "exp": now + 600,
    });
    if let (Some(b), Some(o)) = (base.as_object_mut(), overrides.as_object()) {
        for (k, v) in o {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

fn sign(signer: &Signer, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(signer.kid.clone());
    jsonwebtoken::encode(&header, claims, &signer.key).unwrap_or_default()
}

fn forge(header: Value, claims: &Value, signature: &[u8]) -> String {
    let enc = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap_or_default());
    format!(
        "{}.{}.{}",
        enc(&header),
        enc(claims),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// Whether an error is the one a case expects.
type Expect = fn(&AuthError) -> bool;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

#[tokio::test]
async fn good_token_maps_claims_with_prefixes() -> TestResult {
    let s = signer("k1")?;
    let auth = authenticator(&s);
    let identity = auth.verify(&sign(&s, &claims(json!({})))).await?;
    assert_eq!(identity.username, "oidc:alice@example.com");
    // system: groups from an IdP are dropped, never forwarded.
    assert_eq!(identity.groups, vec!["engineers".to_string()]);
    // The second verification is served by the cache.
    auth.verify(&sign(&s, &claims(json!({})))).await?;
    assert_eq!(auth.cache.len(), 1);
    Ok(())
}

#[tokio::test]
async fn bad_tokens_are_refused() -> TestResult {
    let s = signer("k1")?;
    let other = signer("k1")?;
    let auth = authenticator(&s);
    let now = jsonwebtoken::get_current_timestamp();
    let cases: Vec<(&str, String, Expect)> = vec![
        (
            "expired",
            sign(&s, &claims(json!({"exp": now - 3600, "nbf": now - 7200}))),
            |e| matches!(e, AuthError::Expired),
        ),
        (
            "not yet valid",
            sign(&s, &claims(json!({"nbf": now + 3600}))),
            |e| matches!(e, AuthError::NotYetValid),
        ),
        (
            "wrong aud",
            sign(&s, &claims(json!({"aud": "someone-else"}))),
            |e| matches!(e, AuthError::WrongAudience),
        ),
        (
            "wrong iss",
            sign(&s, &claims(json!({"iss": "https://evil.test"}))),
            |e| matches!(e, AuthError::WrongIssuer),
        ),
        (
            "other key, same kid",
            sign(&other, &claims(json!({}))),
            |e| matches!(e, AuthError::BadSignature),
        ),
        (
            "unknown kid",
            sign(&signer("k2")?, &claims(json!({}))),
            |e| matches!(e, AuthError::UnknownKey(k) if k == "k2"),
        ),
        (
            "alg none",
            forge(json!({"alg": "none", "kid": "k1"}), &claims(json!({})), b""),
            |e| matches!(e, AuthError::Algorithm(a) if a == "none"),
        ),
        (
            "HS256 keyed with the public key",
            {
                let hs = EncodingKey::from_secret(&s.public_raw);
                let mut header = Header::new(Algorithm::HS256);
                header.kid = Some("k1".into());
                jsonwebtoken::encode(&header, &claims(json!({})), &hs)?
            },
            |e| matches!(e, AuthError::Algorithm(a) if a == "HS256"),
        ),
        ("garbage", "not-a-jwt".into(), |e| {
            matches!(e, AuthError::Malformed(_))
        }),
        ("garbage header", "!!!.e30.sig".into(), |e| {
            matches!(e, AuthError::Malformed(_))
        }),
        (
            "unverified email",
            sign(&s, &claims(json!({"email_verified": false}))),
            |e| matches!(e, AuthError::EmailNotVerified),
        ),
        (
            "no username claim",
            sign(&s, &claims(json!({"email": null}))),
            |e| matches!(e, AuthError::Claim(c) if c == "email"),
        ),
        (
            "groups not strings",
            sign(&s, &claims(json!({"groups": [1, 2]}))),
            |e| matches!(e, AuthError::Claim(c) if c == "groups"),
        ),
    ];
    for (name, token, expected) in cases {
        match auth.verify(&token).await {
            Ok(id) => panic!("{name}: accepted as {id:?}"),
            Err(err) => assert!(expected(&err), "{name}: unexpected error {err:?}"),
        }
    }
    assert!(auth.cache.is_empty());
    Ok(())
}

#[tokio::test]
async fn reserved_usernames_are_refused() -> TestResult {
    let s = signer("k1")?;
    let mut auth = authenticator(&s);
    auth.config.username_prefix = String::new();
    let token = sign(
        &s,
        &claims(json!({"email": "system:serviceaccount:kube-system:admin"})),
    );
    assert!(matches!(
        auth.verify(&token).await,
        Err(AuthError::ReservedUsername(_))
    ));
    Ok(())
}

#[test]
fn bearer_header_parsing() {
    let mut headers = http::HeaderMap::new();
    assert_eq!(bearer_token(&headers), None);
    headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_static("bearer abc"),
    );
    assert_eq!(bearer_token(&headers), Some("abc"));
    headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_static("Basic abc"),
    );
    assert_eq!(bearer_token(&headers), None);
}
