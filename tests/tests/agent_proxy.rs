//! End to end through the real `gatehouse-agent` binary: kubectl 1.32 with an OIDC ID
//! token → agent → Kubernetes API emulator, which records who called and as whom.
//!
//! Needs the binaries: `cargo build --workspace --bins` (see `harness::stack`).

use gatehouse_tests::harness::kubectl::Kubectl;
use gatehouse_tests::harness::stack::{Stack, StackOptions};
use std::time::Duration;

const AGENT_SA: &str = "system:serviceaccount:gatehouse:gatehouse-agent";
const DEV_POD: &str = "web-7d9f8b6c4-x2k9p";

async fn stack() -> anyhow::Result<(tempfile::TempDir, Stack)> {
    let dir = tempfile::tempdir()?;
    let stack = Stack::start(StackOptions::new(dir.path())).await?;
    Ok((dir, stack))
}

#[tokio::test]
async fn kubectl_reaches_the_cluster_as_the_oidc_user() -> anyhow::Result<()> {
    let (_dir, stack) = stack().await?;
    let kubectl = Kubectl::v1_32(&stack.kubeconfig_for("alice")?)?;

    let out = kubectl.run(&["get", "pods", "-n", "dev"]).await?.ok()?;
    assert!(out.stdout.contains(DEV_POD), "{}", out.stdout);

    let log = stack.emulator.request_log();
    let list = log
        .iter()
        .find(|r| r.path == "/api/v1/namespaces/dev/pods" && r.verb == "list")
        .ok_or_else(|| anyhow::anyhow!("no pod list in the emulator's log: {log:#?}"))?;
    assert_eq!(list.user, AGENT_SA);
    assert_eq!(list.impersonated_user.as_deref(), Some("alice"));
    assert!(
        list.impersonated_groups.iter().any(|g| g == "engineers"),
        "{list:?}"
    );
    assert_eq!(list.code, 200);
    // Every request the agent forwarded used its own credential and impersonation.
    assert!(
        log.iter()
            .all(|r| r.user == AGENT_SA && r.impersonated_user.as_deref() == Some("alice")),
        "{log:#?}"
    );

    // RBAC is the emulator's, applied to alice: engineers only view prod, so no secrets.
    let out = kubectl
        .run(&["get", "secret", "db-credentials", "-n", "prod"])
        .await?;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("Forbidden") && out.stderr.contains("alice"),
        "{}",
        out.stderr
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn bad_tokens_get_kubectls_login_message() -> anyhow::Result<()> {
    let (_dir, stack) = stack().await?;
    let expired = stack.issuer.mint_with(
        "alice",
        serde_json::json!({"exp": 1_000_000, "nbf": 999_000, "iat": 999_000}),
    )?;
    let wrong_aud = stack
        .issuer
        .mint_with("alice", serde_json::json!({"aud": "someone-else"}))?;
    for (name, token, why) in [
        ("garbage", "not-a-token".to_string(), "not a valid JWT"),
        ("expired", expired, "expired"),
        ("wrong-aud", wrong_aud, "audience"),
    ] {
        let kubectl = Kubectl::v1_32(&stack.kubeconfig_with_token(name, &token)?)?;
        let out = kubectl.run(&["get", "pods", "-n", "dev"]).await?;
        assert_ne!(out.code, 0, "{name}");
        // kubectl's discovery client drops the Status message, as with a real API server;
        // the reason is in the Status body and in the agent's audit line.
        assert!(
            out.stderr.contains("You must be logged in to the server"),
            "{name}: {}",
            out.stderr
        );
        let log = std::fs::read_to_string(&stack.agent.log_path)?;
        assert!(log.contains(why), "{name}: agent log lacks {why:?}:\n{log}");
    }
    let log = std::fs::read_to_string(&stack.agent.log_path)?;
    assert!(!log.contains("not-a-token"), "tokens must never be logged");
    assert!(
        stack.emulator.request_log().is_empty(),
        "nothing may reach the cluster"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn kubectl_as_is_forbidden() -> anyhow::Result<()> {
    let (_dir, stack) = stack().await?;
    let kubectl = Kubectl::v1_32(&stack.kubeconfig_for("alice")?)?;
    let out = kubectl
        .run(&["get", "pods", "-n", "dev", "--as=bob"])
        .await?;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("Error from server (Forbidden)"),
        "{}",
        out.stderr
    );
    let agent_log = std::fs::read_to_string(&stack.agent.log_path)?;
    assert!(
        agent_log.contains("cannot impersonate through gatehouse"),
        "{agent_log}"
    );
    let log = stack.emulator.request_log();
    assert!(
        log.iter()
            .all(|r| r.impersonated_user.as_deref() != Some("bob")),
        "{log:#?}"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn exec_and_follow_logs_are_relayed() -> anyhow::Result<()> {
    let (_dir, stack) = stack().await?;
    let kubectl = Kubectl::v1_32(&stack.kubeconfig_for("alice")?)?;

    let out = kubectl
        .run(&[
            "exec",
            "-n",
            "dev",
            DEV_POD,
            "--",
            "sh",
            "-c",
            "echo hello-from-$((6*7)); exit 3",
        ])
        .await?;
    assert!(
        out.stdout.contains("hello-from-42"),
        "stdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
    assert_eq!(out.code, 3, "exit code is relayed: {}", out.stderr);

    let mut logs = kubectl.spawn(&["logs", "-f", "-n", "dev", DEV_POD])?;
    // The pod prints a line every 2 s: two lines prove the stream is relayed as it comes.
    logs.wait_line(Duration::from_secs(20), |l| l.contains("web: served"))
        .await?;
    logs.wait_line(Duration::from_secs(20), |l| l.contains("web: served"))
        .await?;
    logs.stop().await;

    let log = stack.emulator.request_log();
    assert!(
        log.iter()
            .any(|r| r.path.ends_with("/exec") && r.impersonated_user.as_deref() == Some("alice")),
        "{log:#?}"
    );
    stack.shutdown().await;
    Ok(())
}
