//! End to end through the real `gatehouse-agent`: the IdP rotates its signing key and
//! kubectl keeps working without an agent restart (periodic JWKS refresh), a token of the
//! retired key is then refused, and the operations endpoints report it.
//!
//! Cache semantics: a token verified before the rotation stays valid until it expires
//! (the agent caches verified tokens by digest), like the API server's own OIDC cache.
//!
//! Needs the binaries: `cargo build -p gatehouse-agent -p gatehouse-collector --bins`.

use gatehouse_tests::harness::kubectl::Kubectl;
use gatehouse_tests::harness::ports::free_loopback_addr;
use gatehouse_tests::harness::stack::{Stack, StackOptions};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` over plain HTTP/1.0: (status code, whole response).
async fn ops_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: ops\r\n\r\n").as_bytes())
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, text))
}

async fn get_pods(stack: &Stack, name: &str, token: &str) -> anyhow::Result<(i32, String)> {
    let kubectl = Kubectl::v1_32(&stack.kubeconfig_with_token(name, token)?)?;
    let out = kubectl.run(&["get", "pods", "-n", "dev"]).await?;
    Ok((out.code, out.stderr))
}

#[tokio::test]
async fn signing_key_rotation_needs_no_agent_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ops = free_loopback_addr()?;
    let mut options = StackOptions::new(dir.path());
    options.agent_args = vec![
        "--oidc-jwks-refresh=1s".into(),
        format!("--ops-listen={ops}"),
    ];
    let stack = Stack::start(options).await?;
    let ttl = Duration::from_secs(600);

    let used_before = stack.issuer.mint("alice", &["engineers"], ttl)?;
    // A different exp, so it is not byte-identical to the first (ES256 here is deterministic).
    let unused_old = stack
        .issuer
        .mint("alice", &["engineers"], ttl + Duration::from_secs(1))?;
    assert_ne!(unused_old, used_before);
    let (code, stderr) = get_pods(&stack, "before", &used_before).await?;
    assert_eq!(code, 0, "{stderr}");

    let new_kid = stack.issuer.rotate_signing_key()?;
    let fresh = stack.issuer.mint("alice", &["engineers"], ttl)?;
    assert_eq!(
        jsonwebtoken::decode_header(&fresh)?.kid.as_deref(),
        Some(new_kid.as_str())
    );

    // The new key is picked up by the periodic refresh (1 s here); bounded retries.
    let mut last = String::new();
    let mut accepted = false;
    for _ in 0..20 {
        let (code, stderr) = get_pods(&stack, "fresh", &fresh).await?;
        if code == 0 {
            accepted = true;
            break;
        }
        last = stderr;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(accepted, "new-key token refused after rotation: {last}");

    // An old-key token the agent never saw is refused now that the JWKS dropped its key...
    let (code, stderr) = get_pods(&stack, "old", &unused_old).await?;
    assert_ne!(code, 0);
    // kubectl's discovery hides the Status message; the metric below names the reason.
    assert!(stderr.contains("logged in"), "{stderr}");
    // ...while the one verified before the rotation stays cached until it expires.
    let (code, stderr) = get_pods(&stack, "before", &used_before).await?;
    assert_eq!(code, 0, "{stderr}");

    let (code, body) = ops_get(ops, "/readyz").await?;
    assert_eq!(code, 200, "{body}");
    let (code, metrics) = ops_get(ops, "/metrics").await?;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("gatehouse_agent_auth_failures_total{reason=\"unknown_key\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gatehouse_agent_jwks_refreshes_total{outcome=\"success\"}"),
        "{metrics}"
    );

    // Plain HTTP to the TLS port is a failed handshake, counted (bounded poll: the
    // counter moves just after the agent closes the socket).
    let agent: SocketAddr = stack.agent.url.trim_start_matches("https://").parse()?;
    let mut tcp = tokio::net::TcpStream::connect(agent).await?;
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut sink)).await;
    let mut counted = false;
    for _ in 0..20 {
        let (_, metrics) = ops_get(ops, "/metrics").await?;
        if metrics.contains("gatehouse_agent_tls_handshake_failures_total 1") {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(counted, "TLS handshake failure not counted");
    stack.shutdown().await;
    Ok(())
}
