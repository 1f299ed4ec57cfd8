//! Hostile tokens and impersonation through the real `gatehouse-agent`, and its JSON-lines
//! audit file: every refusal is clear, nothing refused reaches the emulator, and no token
//! is ever written down.
//!
//! Needs the binaries: `cargo build -p gatehouse-agent -p gatehouse-collector --bins`.

use gatehouse_common::audit::{AnsweredBy, AuditEvent, Decision};
use gatehouse_tests::harness::kubectl::Kubectl;
use gatehouse_tests::harness::stack::{Stack, StackOptions};
use std::path::Path;
use std::time::Duration;

async fn stack_with_audit_log() -> anyhow::Result<(tempfile::TempDir, Stack, std::path::PathBuf)> {
    let dir = tempfile::tempdir()?;
    let audit = dir.path().join("audit.jsonl");
    let mut options = StackOptions::new(dir.path());
    options.agent_args = vec!["--audit-log".into(), audit.display().to_string()];
    let stack = Stack::start(options).await?;
    Ok((dir, stack, audit))
}

fn events(path: &Path) -> anyhow::Result<Vec<AuditEvent>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

/// Waits (bounded) until the audit file holds `n` request events.
async fn wait_for_events(path: &Path, n: usize) -> anyhow::Result<Vec<AuditEvent>> {
    for _ in 0..100 {
        let found = events(path)?;
        if found.len() >= n {
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    events(path)
}

#[tokio::test]
async fn hostile_tokens_are_refused_and_never_logged() -> anyhow::Result<()> {
    let (_dir, stack, audit) = stack_with_audit_log().await?;
    let future = chrono::Utc::now().timestamp() + 3600;
    let not_yet = stack
        .issuer
        .mint_with("alice", serde_json::json!({"nbf": future, "iat": future}))?;
    let wrong_iss = stack
        .issuer
        .mint_with("alice", serde_json::json!({"iss": "https://evil.example"}))?;
    let now = chrono::Utc::now().timestamp();
    let expired = stack.issuer.mint_with(
        "alice",
        serde_json::json!({"exp": now - 3600, "iat": now - 7200, "nbf": now - 7200}),
    )?;
    let wrong_aud = stack
        .issuer
        .mint_with("alice", serde_json::json!({"aud": "someone-else"}))?;
    let alg_none = stack.issuer.forge_alg_none("alice");
    let hs256 = stack.issuer.forge_hs256_with_public_key("alice")?;
    // An unknown kid while the IdP is down: the agent may try one JWKS fetch, which fails,
    // and must still answer 401 promptly (not 5xx, not a hang).
    stack.issuer.set_jwks_down(true);
    let unknown_kid = stack.issuer.mint_with_unknown_kid("alice")?;
    let cases = [
        ("not-yet-valid", not_yet),
        ("wrong-iss", wrong_iss),
        ("expired", expired),
        ("wrong-aud", wrong_aud),
        ("alg-none", alg_none),
        ("hs256-public-key", hs256),
        ("unknown-kid-jwks-down", unknown_kid),
        ("garbage-base64", "eyJ!!!.@@@notbase64@@@.###".to_string()),
    ];
    for (name, token) in &cases {
        let kubectl = Kubectl::v1_32(&stack.kubeconfig_with_token(name, token)?)?;
        let out = kubectl.run(&["get", "pods", "-n", "dev"]).await?;
        assert_ne!(out.code, 0, "{name}");
        assert!(
            out.stderr.contains("You must be logged in to the server"),
            "{name}: {}",
            out.stderr
        );
    }
    assert!(
        stack.emulator.request_log().is_empty(),
        "nothing refused may reach the cluster"
    );
    let agent_log = std::fs::read_to_string(&stack.agent.log_path)?;
    let audit_text = std::fs::read_to_string(&audit).unwrap_or_default();
    for (name, token) in &cases {
        // The longest part (signature, or claims for `alg: none`) identifies a token.
        let sig = token.split('.').max_by_key(|p| p.len()).unwrap_or(token);
        assert!(!agent_log.contains(sig), "{name}: token in the agent log");
        assert!(!audit_text.contains(sig), "{name}: token in the audit file");
    }
    // The agent stays healthy: once the IdP is back, a good token works.
    stack.issuer.set_jwks_down(false);
    let good = Kubectl::v1_32(&stack.kubeconfig_for("alice")?)?;
    let out = good.run(&["get", "pods", "-n", "dev"]).await?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let evs = wait_for_events(&audit, cases.len() + 1).await?;
    let denials = evs
        .iter()
        .filter(|ev| matches!(ev, AuditEvent::ApiRequest(e) if e.decision == Decision::Deny))
        .count();
    // kubectl may retry discovery, so at least one refusal per case.
    assert!(
        denials >= cases.len(),
        "{denials} denials for {} cases",
        cases.len()
    );
    for ev in evs
        .iter()
        .filter(|ev| matches!(ev, AuditEvent::ApiRequest(e) if e.decision == Decision::Deny))
    {
        if let AuditEvent::ApiRequest(e) = ev {
            assert_eq!(
                (e.decision, e.decided_by.as_str(), e.status_code),
                (Decision::Deny, "authentication", 401)
            );
        }
    }
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn as_group_is_forbidden_naming_impersonation() -> anyhow::Result<()> {
    let (_dir, stack, audit) = stack_with_audit_log().await?;
    let kubectl = Kubectl::v1_32(&stack.kubeconfig_for("alice")?)?;
    let out = kubectl
        .run(&[
            "get",
            "pods",
            "-n",
            "dev",
            "--as=alice",
            "--as-group=system:masters",
        ])
        .await?;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("Error from server (Forbidden)"),
        "{}",
        out.stderr
    );
    // kubectl's discovery client prints the reason only ("Forbidden: unknown"); the
    // message naming impersonation is in the Status body and the audit event below.
    assert!(
        stack
            .emulator
            .request_log()
            .iter()
            .all(|r| !r.impersonated_groups.iter().any(|g| g == "system:masters")),
        "client impersonation must never reach the cluster"
    );
    let evs = wait_for_events(&audit, 1).await?;
    assert!(
        evs.iter().any(|ev| matches!(ev, AuditEvent::ApiRequest(e)
            if e.decided_by == "impersonation" && e.status_code == 403 && e.user == "alice")),
        "{evs:#?}"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn audit_file_has_one_event_per_request_and_watches_end_late() -> anyhow::Result<()> {
    let (_dir, stack, audit) = stack_with_audit_log().await?;
    let kubectl = Kubectl::v1_32(&stack.kubeconfig_for("alice")?)?;
    kubectl.run(&["get", "pods", "-n", "dev"]).await?.ok()?;
    let forwarded = stack.emulator.request_log().len();
    let evs = wait_for_events(&audit, forwarded + 1).await?;
    let requests: Vec<_> = evs
        .iter()
        .filter_map(|ev| match ev {
            // The stack's own readiness probe (no token) is answered by the agent.
            AuditEvent::ApiRequest(e) if e.answered_by == AnsweredBy::Upstream => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(
        requests.len(),
        forwarded,
        "one event per forwarded request: {requests:#?}"
    );
    let list = requests
        .iter()
        .find(|e| e.path == "/api/v1/namespaces/dev/pods")
        .ok_or_else(|| anyhow::anyhow!("no pod list event: {requests:#?}"))?;
    assert_eq!(
        (
            list.user.as_str(),
            list.verb.as_str(),
            list.resource.as_str(),
            list.namespace.as_str(),
            list.status_code
        ),
        ("alice", "list", "pods", "dev", 200)
    );
    // A watch: its event appears only once the watch ends.
    let before = requests.len();
    let watch = kubectl.run(&[
        "get",
        "pods",
        "-n",
        "dev",
        "--watch",
        "--request-timeout=2s",
    ]);
    let _ = tokio::time::timeout(Duration::from_secs(30), watch).await;
    // kubectl sends a list, then the watch: wait for both. (kubectl may exit before the
    // agent has noticed the watch end and written its event, so one new event, the list,
    // is not yet enough.)
    let evs = wait_for_events(&audit, before + 2).await?;
    assert!(
        evs.iter().any(|ev| matches!(ev, AuditEvent::ApiRequest(e)
            if e.verb == "watch" && e.duration_ms >= e.latency_ms)),
        "{evs:#?}"
    );
    // bytes_in counts the request body kubectl sent; a GET sends none.
    assert_eq!(list.bytes_in, 0, "{list:?}");
    let before = evs.len();
    kubectl
        .run(&[
            "create",
            "configmap",
            "audit-bytes",
            "-n",
            "dev",
            "--from-literal=greeting=hello",
        ])
        .await?
        .ok()?;
    let evs = wait_for_events(&audit, before + 1).await?;
    let create = evs
        .iter()
        .find_map(|ev| match ev {
            AuditEvent::ApiRequest(e) if e.verb == "create" && e.resource == "configmaps" => {
                Some(e)
            }
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("no configmap create event: {evs:#?}"))?;
    assert_eq!(create.status_code, 201, "{create:?}");
    // The JSON (or protobuf) body holds at least the name and the data.
    assert!(create.bytes_in > "audit-bytes".len() as u64, "{create:?}");
    stack.shutdown().await;
    Ok(())
}

/// Sends hand-written HTTP/1.1 bytes over TLS (so no client library normalises the path)
/// and returns the status code and body.
async fn raw_request(stack: &Stack, path: &str, token: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(stack.ca_cert_path())?;
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let addr = stack
        .agent_url()
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?;
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await?;
    // An empty token sends no Authorization header at all.
    let authorization = if token.is_empty() {
        String::new()
    } else {
        format!("Authorization: Bearer {token}\r\n")
    };
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Connection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf)).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    Ok((code, body))
}

#[tokio::test]
async fn ambiguous_paths_get_400_and_never_reach_the_cluster() -> anyhow::Result<()> {
    let (_dir, stack, _audit) = stack_with_audit_log().await?;
    let token = stack
        .issuer
        .mint("alice", &["engineers"], Duration::from_secs(300))?;
    for path in [
        "/api/v1/namespaces/dev/pods/../../secrets",
        "/api/v1/namespaces/dev/./pods",
        "/api/v1//namespaces/prod/secrets",
        "/api/v1/namespaces/prod%2fsecrets",
        "/api/v1/namespaces/%2e%2e/secrets",
        "/api/v1/namespaces/prod%252fsecrets",
        "/api/v1/namespaces/prod%00",
        "/api/v1/namespaces/prod%5csecrets",
        "/api/v1/namespaces/pr%0aod",
    ] {
        let (code, body) = raw_request(&stack, path, &token).await?;
        assert_eq!(code, 400, "{path}: {body}");
        let status: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(status["reason"], "BadRequest", "{path}: {body}");
        assert!(
            status["message"]
                .as_str()
                .unwrap_or_default()
                .contains("ambiguous request path"),
            "{path}: {body}"
        );
    }
    assert!(
        stack.emulator.request_log().is_empty(),
        "no ambiguous path may reach the cluster"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_64_kib_token_gets_a_clear_401() -> anyhow::Result<()> {
    let (_dir, stack, _audit) = stack_with_audit_log().await?;
    let huge = "a".repeat(64 * 1024);
    let (code, body) = raw_request(&stack, "/api/v1/namespaces/dev/pods", &huge).await?;
    assert_eq!(code, 401, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(status["reason"], "Unauthorized", "{body}");
    assert!(stack.emulator.request_log().is_empty());
    // The agent is still serving afterwards.
    let kubectl = Kubectl::v1_32(&stack.kubeconfig_for("alice")?)?;
    kubectl.run(&["get", "pods", "-n", "dev"]).await?.ok()?;
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn no_credentials_get_a_401_status() -> anyhow::Result<()> {
    // A kubeconfig without any user makes kubectl prompt for a password on stdin before it
    // sends anything (client-go behaviour, the same against any API server), so the
    // credential-less request is sent by hand.
    let (_dir, stack, audit) = stack_with_audit_log().await?;
    let (code, body) = raw_request(&stack, "/api/v1/namespaces/dev/pods", "").await?;
    assert_eq!(code, 401, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Unauthorized");
    assert!(
        stack.emulator.request_log().is_empty(),
        "an anonymous request may not reach the cluster"
    );
    let evs = wait_for_events(&audit, 1).await?;
    assert!(!evs.is_empty(), "the refusal is audited");
    assert!(
        evs.iter().all(|ev| matches!(ev, AuditEvent::ApiRequest(e)
            if e.decision == Decision::Deny && e.decided_by == "authentication"
                && e.status_code == 401 && e.user.is_empty())),
        "{evs:#?}"
    );
    stack.shutdown().await;
    Ok(())
}
