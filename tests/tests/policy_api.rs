//! Changing the policy through the real collector's query API (`PUT /v1/policy`, OIDC,
//! `--policy-admin-groups`): refused for non-admins, a malformed policy refused with its
//! line number while the active one stays, a good one applied and written to the file,
//! and every attempt an audit event the security team can read back.
//!
//! Needs the binaries: `cargo build -p gatehouse-collector --bins`.

mod collector_support;

use bytes::Bytes;
use collector_support::{Collector, Pki, WAIT, client_tls};
use gatehouse_tests::harness::ports::free_loopback_addr;
use gatehouse_tests::oidc::{DevUser, OidcIssuer};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::time::Duration;

const V1: &str = "apiVersion: gatehouse.dev/v1\nkind: Policy\nmetadata: {name: one}\nrules:\n  - name: a\n    subjects: {users: [x]}\n    action: allow\n";
const V2: &str = "apiVersion: gatehouse.dev/v1\nkind: Policy\nmetadata: {name: two}\nrules:\n  - name: b\n    subjects: {groups: [engineers]}\n    match: {verbs: [get]}\n    action: allow\n";
const BAD: &str = "apiVersion: gatehouse.dev/v1\nkind: Policy\nrules:\n  - name: c\n    subjects: {users: [x]}\n    action: maybe\n";

struct Api {
    client: Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: &str,
    ) -> anyhow::Result<(u16, Option<String>, String)> {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from(body.to_string())))?;
        let resp = tokio::time::timeout(WAIT, self.client.request(req)).await??;
        let code = resp.status().as_u16();
        let version = resp
            .headers()
            .get("x-gatehouse-policy-version")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((code, version, String::from_utf8_lossy(&body).into_owned()))
    }
}

async fn wait_listening(addr: SocketAddr, collector: &Collector) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "query API did not listen:\n{}",
            collector.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_changes_through_the_api_are_checked_and_audited() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let issuer = OidcIssuer::start(
        vec![
            DevUser::new("bob", &["sre-leads"]),
            DevUser::new("alice", &["engineers"]),
            DevUser::new("sam", &["security"]),
        ],
        &pki.server_ca,
    )
    .await?;
    let ca_file = pki.dir.path().join("server-ca.crt");
    pki.server_ca.write_cert(&ca_file)?;
    let policy_file = pki.dir.path().join("policy.yaml");
    std::fs::write(&policy_file, V1)?;
    let store_dir = pki.dir.path().join("store");
    let api_addr = free_loopback_addr()?;
    let collector = Collector::start_embedded_with(
        &pki,
        &store_dir,
        free_loopback_addr()?,
        &[
            format!("--api-listen={api_addr}"),
            format!("--oidc-issuer-url={}", issuer.issuer_url()),
            format!("--oidc-client-id={}", issuer.client_id()),
            format!("--oidc-ca-file={}", ca_file.display()),
            format!("--policy={}", policy_file.display()),
            "--policy-admin-groups=sre-leads".into(),
        ],
    )
    .await?;
    wait_listening(api_addr, &collector).await?;
    let mut tls = client_tls(&pki.server_ca.cert_pem(), None)?;
    tls.alpn_protocols.clear();
    let api = Api {
        client: Client::builder(TokioExecutor::new()).build(
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_only()
                .enable_http1()
                .build(),
        ),
        base: format!("https://127.0.0.1:{}", api_addr.port()),
    };
    let ttl = Duration::from_secs(600);
    let bob = issuer.mint("bob", &["sre-leads"], ttl)?;
    let alice = issuer.mint("alice", &["engineers"], ttl)?;
    let sam = issuer.mint("sam", &["security"], ttl)?;

    let (code, v1, body) = api.call("GET", "/v1/policy", &sam, "").await?;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("name: one"));
    let v1 = v1.unwrap_or_default();

    // Not an admin: refused.
    let (code, _, body) = api.call("PUT", "/v1/policy", &alice, V2).await?;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("--policy-admin-groups"), "{body}");

    // Malformed: refused with its line, the active policy stays.
    let (code, _, body) = api.call("PUT", "/v1/policy", &bob, BAD).await?;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("line 6") && body.contains("maybe"), "{body}");
    let (_, version, _) = api.call("GET", "/v1/policy", &bob, "").await?;
    assert_eq!(version.as_deref(), Some(v1.as_str()));
    assert_eq!(std::fs::read_to_string(&policy_file)?, V1);

    // Good: applied, and written to the file (a restart keeps it).
    let (code, _, body) = api.call("PUT", "/v1/policy", &bob, V2).await?;
    assert_eq!(code, 200, "{body}");
    let (_, v2, text) = api.call("GET", "/v1/policy", &sam, "").await?;
    assert!(text.contains("name: two"), "{text}");
    assert_ne!(v2.as_deref(), Some(v1.as_str()));
    assert_eq!(std::fs::read_to_string(&policy_file)?, V2);

    // Every attempt is in the audit trail.
    let (code, _, body) = api
        .call("GET", "/v1/audit/requests?resource=policies", &sam, "")
        .await?;
    assert_eq!(code, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body)?;
    let items = page["items"].as_array().cloned().unwrap_or_default();
    let seen: Vec<(String, u64, String)> = items
        .iter()
        .map(|i| {
            (
                i["user"].as_str().unwrap_or_default().to_string(),
                i["status_code"].as_u64().unwrap_or_default(),
                i["decision"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for want in [
        ("alice".to_string(), 403, "deny".to_string()),
        ("bob".to_string(), 400, "deny".to_string()),
        ("bob".to_string(), 200, "allow".to_string()),
    ] {
        assert!(seen.contains(&want), "{want:?} missing from {seen:?}");
    }
    collector.stop().await?;
    Ok(())
}
