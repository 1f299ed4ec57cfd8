//! The query API's handler over a [`MemoryStore`] with an in-memory key set: who may ask,
//! pages, export, bad parameters, unknown sessions, a store that is down.

use super::*;
use crate::store::AuditStore;
use crate::store::memory::MemoryStore;
use base64::Engine as _;
use gatehouse_common::audit::{ApiRequestEvent, AuditEvent, SessionEndEvent};
use gatehouse_common::oidc::OidcConfig;
use gatehouse_common::oidc::jwks::{KeyStore, VerifyKey};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const ISSUER: &str = "https://issuer.test";

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct Fixture {
    state: Arc<ApiState>,
    store: Arc<MemoryStore>,
    key: EncodingKey,
}

impl Fixture {
    async fn new() -> Result<Self, Box<dyn std::error::Error>> {
        let pair = rcgen::KeyPair::generate()?;
        let raw = pair.public_key_raw().to_vec();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwk: Jwk = serde_json::from_value(json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "k1",
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        }))?;
        let keys = VerifyKey::from_jwk(&jwk).into_iter().collect();
        let config = OidcConfig {
            issuer_url: ISSUER.into(),
            ..OidcConfig::default()
        };
        let store = Arc::new(MemoryStore::new());
        let events: Vec<AuditEvent> = (0..25)
            .map(|n| {
                AuditEvent::ApiRequest(ApiRequestEvent {
                    event_id: format!("e{n:02}"),
                    time: chrono::DateTime::from_timestamp(1_700_000_000 + n, 0)
                        .unwrap_or_default(),
                    user: if n % 2 == 0 { "alice" } else { "bob" }.into(),
                    verb: "get".into(),
                    session_id: (n == 3).then(|| "s1".to_string()),
                    ..ApiRequestEvent::default()
                })
            })
            .chain([AuditEvent::SessionEnd(SessionEndEvent {
                event_id: "se1".into(),
                session_id: "s1".into(),
                user: "alice".into(),
                ..SessionEndEvent::default()
            })])
            .collect();
        store.insert(&events).await?;
        let state = Arc::new(ApiState {
            policy_admin: None,
            store: store.clone(),
            authenticator: Authenticator::new(config, KeyStore::fixed(keys)),
            query_groups: vec!["security".into()],
            handshake_timeout: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(1),
        });
        Ok(Self {
            state,
            store,
            key: EncodingKey::from_ec_der(&pair.serialize_der()),
        })
    }

    fn token(&self, sub: &str, groups: &[&str]) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = json!({
            "iss": ISSUER, "aud": "gatehouse", "sub": sub, "groups": groups,
            "iat": now, "exp": now + 600,
        });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap_or_default()
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        accept: Option<&str>,
    ) -> Result<(StatusCode, http::HeaderMap, String), Box<dyn std::error::Error>> {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(a) = accept {
            req = req.header(header::ACCEPT, a);
        }
        let resp = handle(&self.state, req.body(())?).await;
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await?.to_bytes();
        Ok((
            parts.status,
            parts.headers,
            String::from_utf8(bytes.to_vec())?,
        ))
    }
}

#[tokio::test]
async fn only_authenticated_members_of_the_query_groups_may_ask() -> TestResult {
    let f = Fixture::new().await?;
    let (code, headers, body) = f
        .call(Method::GET, "/v1/audit/requests", None, None)
        .await?;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert_eq!(
        headers.get(header::WWW_AUTHENTICATE).map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    let status: Value = serde_json::from_str(&body)?;
    assert_eq!(
        (status["kind"].as_str(), status["code"].as_u64()),
        (Some("Status"), Some(401))
    );
    let (code, _, _) = f
        .call(Method::GET, "/v1/sessions", Some("a.b.c"), None)
        .await?;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let dev = f.token("dan", &["dev"]);
    let (code, _, body) = f
        .call(Method::GET, "/v1/sessions/s1", Some(&dev), None)
        .await?;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(body.contains("security"), "{body}");
    let sec = f.token("sam", &["security"]);
    let (code, _, _) = f
        .call(Method::GET, "/v1/sessions/s1", Some(&sec), None)
        .await?;
    assert_eq!(code, StatusCode::OK);
    let (code, _, _) = f
        .call(Method::POST, "/v1/sessions", Some(&sec), None)
        .await?;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    let (code, _, _) = f.call(Method::GET, "/v1/other", Some(&sec), None).await?;
    assert_eq!(code, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn pages_follow_cursors_and_ndjson_exports_everything() -> TestResult {
    let f = Fixture::new().await?;
    let sec = f.token("sam", &["security"]);
    let mut seen = Vec::new();
    let mut uri = "/v1/audit/requests?limit=10".to_string();
    loop {
        let (code, _, body) = f.call(Method::GET, &uri, Some(&sec), None).await?;
        assert_eq!(code, StatusCode::OK, "{body}");
        let page: Value = serde_json::from_str(&body)?;
        for item in page["items"].as_array().into_iter().flatten() {
            seen.push(item["event_id"].as_str().unwrap_or_default().to_string());
        }
        match page["next"].as_str() {
            Some(c) => uri = format!("/v1/audit/requests?limit=10&cursor={c}"),
            None => break,
        }
    }
    let want: Vec<String> = (0..25).rev().map(|n| format!("e{n:02}")).collect();
    assert_eq!(seen, want);

    let (code, headers, body) = f
        .call(
            Method::GET,
            "/v1/audit/requests?user=alice",
            Some(&sec),
            Some("application/x-ndjson"),
        )
        .await?;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
        Some(&b"application/x-ndjson"[..])
    );
    assert_eq!(body.lines().count(), 13);
    let (_, _, body) = f
        .call(Method::GET, "/v1/sessions?format=ndjson", Some(&sec), None)
        .await?;
    assert_eq!(body.lines().count(), 1);
    Ok(())
}

#[tokio::test]
async fn bad_parameters_unknown_sessions_and_a_down_store_are_clear() -> TestResult {
    let f = Fixture::new().await?;
    let sec = f.token("sam", &["security"]);
    let (code, _, body) = f
        .call(
            Method::GET,
            "/v1/audit/requests?since=someday",
            Some(&sec),
            None,
        )
        .await?;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body.contains("since"), "{body}");
    let (code, _, body) = f
        .call(Method::GET, "/v1/sessions/nope", Some(&sec), None)
        .await?;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(body.contains("nope"), "{body}");
    let (code, _, body) = f
        .call(Method::GET, "/v1/sessions/s1", Some(&sec), None)
        .await?;
    let detail: Value = serde_json::from_str(&body)?;
    assert_eq!(
        (code, detail["requests"][0]["event_id"].as_str()),
        (StatusCode::OK, Some("e03"))
    );
    f.store.set_down(true);
    let (code, _, _) = f
        .call(Method::GET, "/v1/audit/requests", Some(&sec), None)
        .await?;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    Ok(())
}

#[tokio::test]
async fn recordings_come_back_as_asciicast_in_seq_order_and_only_to_the_query_groups() -> TestResult
{
    use gatehouse_common::audit::SessionChunkEvent;
    let f = Fixture::new().await?;
    let chunk = |seq: u64, data: &str| {
        AuditEvent::SessionChunk(SessionChunkEvent {
            event_id: format!("c{seq}"),
            session_id: "s1".into(),
            seq,
            data: data.into(),
            ..SessionChunkEvent::default()
        })
    };
    f.store
        .insert(&[
            chunk(2, "[1.0,\"o\",\"b\"]\n"),
            chunk(0, "{\"version\":2,\"width\":80,\"height\":24}\n"),
            chunk(1, "[0.5,\"o\",\"a\"]\n"),
        ])
        .await?;
    let sec = f.token("sam", &["security"]);
    let (code, headers, body) = f
        .call(Method::GET, "/v1/sessions/s1/recording", Some(&sec), None)
        .await?;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/x-asciicast");
    assert_eq!(
        body,
        "{\"version\":2,\"width\":80,\"height\":24}\n[0.5,\"o\",\"a\"]\n[1.0,\"o\",\"b\"]\n"
    );
    let dev = f.token("dave", &["devs"]);
    let (code, _, _) = f
        .call(Method::GET, "/v1/sessions/s1/recording", Some(&dev), None)
        .await?;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let (code, _, body) = f
        .call(Method::GET, "/v1/sessions/zz/recording", Some(&sec), None)
        .await?;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(body.contains("not stored"), "{body}");
    Ok(())
}
