//! The policy end to end, with real kubectl through the real agent, following a policy the
//! real collector holds and serves (`GET /v1/policy`): allowed, denied with the rule's
//! reason, require_approval refused naming the approvers, `--as` only where a rule allows
//! it, a changed policy taking effect on the running agent, a malformed update refused
//! with its line number while the old policy stays, the collector stopped (the agent keeps
//! its last good policy, also across a restart), and an agent that never had a policy.
//!
//! Needs the binaries: `cargo build -p gatehouse-agent -p gatehouse-collector --bins`.

use gatehouse_common::audit::{AuditEvent, Decision};
use gatehouse_tests::harness::kubectl::Kubectl;
use gatehouse_tests::harness::stack::{AuditStore, Stack, StackOptions, StackPolicy, find_bin_dir};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a policy change may take to reach the agent before the test gives up (the
/// long-poll answers at once on a change; the collector checks the file every second).
const PROPAGATION_LIMIT: Duration = Duration::from_secs(20);

const POLICY: &str = r#"apiVersion: gatehouse.dev/v1
kind: Policy
metadata:
  name: e2e
rules:
  - name: discovery
    subjects: {users: ["*"]}
    match: {nonResourceURLs: ["*"]}
    action: allow
  - name: engineers-read
    subjects: {groups: [engineers]}
    match: {verbs: [get, list, watch]}
    action: allow
  - name: no-prod-secrets
    subjects: {groups: [engineers]}
    match: {resources: [secrets], namespaces: [prod]}
    action: deny
    reason: prod secrets are off limits to engineers
  - name: prod-exec-needs-approval
    subjects: {groups: [engineers]}
    match: {resources: [pods], subresources: [exec, attach, portforward], namespaces: [prod]}
    action: require_approval
    reason: exec in prod needs an SRE lead
    approval: {approvers: [sre-leads]}
  - name: namespace-delete-needs-approval
    subjects: {users: ["*"]}
    match: {verbs: [delete], resources: [namespaces]}
    action: require_approval
    approval: {approvers: [sre-leads]}
  - name: alice-as-carol
    subjects: {users: [alice]}
    match: {verbs: [impersonate], resources: [users, groups], names: [carol, security]}
    action: allow
  - name: security-read
    subjects: {groups: [security]}
    match: {verbs: [get, list, watch]}
    action: allow
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    stack: Stack,
    policy: PathBuf,
    audit: PathBuf,
}

async fn start(policy_text: &str) -> anyhow::Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, policy_text)?;
    let audit = dir.path().join("audit.jsonl");
    let mut options = StackOptions::new(dir.path().join("stack"));
    options.audit_store = Some(AuditStore::Embedded {
        dir: dir.path().join("store"),
    });
    options.policy = StackPolicy::Collector(policy.clone());
    options.agent_args = vec![format!("--audit-log={}", audit.display())];
    let stack = Stack::start(options).await?;
    Ok(Fixture {
        _dir: dir,
        stack,
        policy,
        audit,
    })
}

impl Fixture {
    fn kubectl(&self, user: &str) -> anyhow::Result<Kubectl> {
        Kubectl::v1_32(&self.stack.kubeconfig_for(user)?)
    }

    /// Runs `args` as `user` until it succeeds (`want_ok`) or fails, within the limit.
    async fn until(&self, user: &str, args: &[&str], want_ok: bool) -> anyhow::Result<String> {
        let kubectl = self.kubectl(user)?;
        let deadline = Instant::now() + PROPAGATION_LIMIT;
        loop {
            let out = kubectl.run(args).await?;
            if (out.code == 0) == want_ok {
                return Ok(format!("{}{}", out.stdout, out.stderr));
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "kubectl {args:?} still {} after {PROPAGATION_LIMIT:?}: {}",
                if want_ok { "failing" } else { "succeeding" },
                out.stderr
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn events(path: &Path) -> Vec<gatehouse_common::audit::ApiRequestEvent> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<AuditEvent>(l).ok())
        .filter_map(|e| match e {
            AuditEvent::ApiRequest(r) => Some(r),
            AuditEvent::SessionEnd(_) | AuditEvent::SessionChunk(_) => None,
        })
        .collect()
}

/// Waits (bounded) for an audit event matching `pred`.
async fn wait_event(
    path: &Path,
    pred: impl Fn(&gatehouse_common::audit::ApiRequestEvent) -> bool,
) -> anyhow::Result<gatehouse_common::audit::ApiRequestEvent> {
    for _ in 0..100 {
        if let Some(e) = events(path).into_iter().find(|e| pred(e)) {
            return Ok(e);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("no matching audit event in {}", path.display())
}

#[tokio::test]
async fn allowed_denied_approval_and_impersonation() -> anyhow::Result<()> {
    let fx = start(POLICY).await?;
    let alice = fx.kubectl("alice")?;

    // The first fetch from the collector may still be on its way (503 until then).
    let out = fx
        .until("alice", &["get", "pods", "-n", "dev"], true)
        .await?;
    assert!(out.contains("web-7d9f8b6c4-x2k9p"), "{out}");
    let e = wait_event(&fx.audit, |e| e.resource == "pods" && e.namespace == "dev").await?;
    assert_eq!(
        (e.decision, e.decided_by.as_str()),
        (Decision::Allow, "engineers-read")
    );
    assert!(
        e.policy.as_ref().is_some_and(|p| p.version.len() == 16),
        "{e:?}"
    );

    // Denied with the rule's reason, which kubectl prints.
    let out = alice.run(&["get", "secrets", "-n", "prod"]).await?;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("prod secrets are off limits to engineers")
            && out.stderr.contains("no-prod-secrets"),
        "{}",
        out.stderr
    );

    // Writes are not allowed by any rule: default deny.
    let out = alice
        .run(&[
            "create",
            "configmap",
            "x",
            "-n",
            "dev",
            "--from-literal=a=b",
        ])
        .await?;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("default deny"), "{}", out.stderr);

    // require_approval is refused (approvals are not there yet), naming rule and approvers.
    let out = alice.run(&["delete", "namespace", "prod"]).await?;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("namespace-delete-needs-approval") && out.stderr.contains("sre-leads"),
        "{}",
        out.stderr
    );
    let e = wait_event(&fx.audit, |e| {
        e.resource == "namespaces" && e.verb == "delete"
    })
    .await?;
    assert_eq!(e.decision, Decision::RequireApproval);
    assert_eq!(e.status_code, 403);
    assert_eq!(
        e.policy.as_ref().map(|p| p.approvers.clone()),
        Some(vec!["sre-leads".to_string()])
    );
    assert!(
        fx.stack
            .emulator
            .request_log()
            .iter()
            .all(|r| !(r.method == "DELETE" && r.path.ends_with("/namespaces/prod"))),
        "a refused request must not reach the cluster"
    );

    // Exec in prod: refused before any upgrade reaches the cluster.
    let out = alice
        .run(&["exec", "-n", "prod", "api-5c8d7f9b6-q7r4t", "--", "ls"])
        .await?;
    assert_ne!(out.code, 0);
    let e = wait_event(&fx.audit, |e| {
        e.subresource == "exec" && e.namespace == "prod"
    })
    .await?;
    assert_eq!(
        (e.decision, e.decided_by.as_str()),
        (Decision::RequireApproval, "prod-exec-needs-approval")
    );

    // --as: allowed where a rule allows impersonating the target, decided as the target.
    let out = alice
        .run(&[
            "get",
            "pods",
            "-n",
            "dev",
            "--as=carol",
            "--as-group=security",
        ])
        .await?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        fx.stack
            .emulator
            .request_log()
            .iter()
            .any(|r| r.impersonated_user.as_deref() == Some("carol")),
        "the cluster sees the impersonated user"
    );
    let e = wait_event(&fx.audit, |e| {
        e.policy
            .as_ref()
            .is_some_and(|p| p.impersonated_user.as_deref() == Some("carol"))
    })
    .await?;
    assert_eq!(
        (e.user.as_str(), e.decided_by.as_str()),
        ("alice", "security-read")
    );
    // ...and refused for any other target.
    let out = alice
        .run(&[
            "get",
            "pods",
            "-n",
            "dev",
            "--as=bob",
            "--as-group=sre-leads",
        ])
        .await?;
    assert_ne!(out.code, 0);
    assert!(
        fx.stack
            .emulator
            .request_log()
            .iter()
            .all(|r| r.impersonated_user.as_deref() != Some("bob")),
        "refused impersonation must not reach the cluster"
    );
    let e = wait_event(&fx.audit, |e| e.decided_by == "impersonation").await?;
    assert!(
        e.error
            .contains("cannot impersonate through gatehouse (users \"bob\")"),
        "{}",
        e.error
    );
    fx.stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn policy_changes_reach_the_running_agent_and_bad_updates_are_refused() -> anyhow::Result<()>
{
    let fx = start(POLICY).await?;
    let args = ["get", "pods", "-n", "dev"];
    fx.until("carol", &args, true).await?;
    // Take security's read away: the running agent follows the collector.
    let without = POLICY
        .replace("  - name: security-read\n", "  - name: security-read-off\n")
        .replace(
            "subjects: {groups: [security]}\n    match: {verbs: [get, list, watch]}",
            "subjects: {groups: [nobody]}\n    match: {verbs: [get, list, watch]}",
        );
    std::fs::write(&fx.policy, &without)?;
    let refused = fx.until("carol", &args, false).await?;
    assert!(refused.contains("default deny"), "{refused}");

    // A malformed update: refused with its line number, the previous policy stays active.
    let broken = format!(
        "{without}  - name: broken\n    subjects: {{users: [x]}}\n    action: allow\n    colour: blue\n"
    );
    let line = broken.lines().count();
    std::fs::write(&fx.policy, &broken)?;
    let log = fx.stack.collector.log_path.clone();
    let deadline = Instant::now() + PROPAGATION_LIMIT;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("policy update refused") {
            assert!(text.contains(&format!("line {line}")), "{text}");
            assert!(text.contains("colour"), "{text}");
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "collector never refused the update:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = fx.kubectl("carol")?.run(&args).await?;
    assert_ne!(
        out.code, 0,
        "the policy before the bad update must still decide"
    );
    let out = fx.kubectl("alice")?.run(&args).await?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The CLI names the same line.
    let cli = find_bin_dir()?.join("gatehouse");
    let check = tokio::process::Command::new(&cli)
        .args(["policy", "check"])
        .arg(&fx.policy)
        .output()
        .await?;
    assert!(!check.status.success());
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(stderr.contains(&format!("line {line}")), "{stderr}");
    fx.stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn collector_down_keeps_the_last_good_policy_across_an_agent_restart() -> anyhow::Result<()> {
    let mut fx = start(POLICY).await?;
    let args = ["get", "pods", "-n", "dev"];
    fx.until("alice", &args, true).await?;
    fx.stack.stop_collector().await;
    let out = fx.kubectl("alice")?.run(&args).await?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = fx
        .kubectl("alice")?
        .run(&["get", "secrets", "-n", "prod"])
        .await?;
    assert!(
        out.stderr.contains("prod secrets are off limits"),
        "{}",
        out.stderr
    );
    // A restarted agent with the collector still down decides with its cached policy.
    fx.stack.restart_agent().await?;
    let out = fx.kubectl("alice")?.run(&args).await?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = fx
        .kubectl("alice")?
        .run(&["get", "secrets", "-n", "prod"])
        .await?;
    assert!(
        out.stderr.contains("prod secrets are off limits"),
        "{}",
        out.stderr
    );
    // The collector back: changes flow again.
    fx.stack.restart_collector().await?;
    let stricter = POLICY.replace(
        "match: {resources: [secrets], namespaces: [prod]}",
        "match: {resources: [secrets, pods], namespaces: [prod, dev]}",
    );
    std::fs::write(&fx.policy, stricter)?;
    let refused = fx.until("alice", &args, false).await?;
    assert!(refused.contains("off limits"), "{refused}");
    fx.stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_agent_that_never_had_a_policy_refuses_with_503() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut options = StackOptions::new(dir.path());
    options.policy = StackPolicy::None;
    let stack = Stack::start(options).await?;
    let out = Kubectl::v1_32(&stack.kubeconfig_for("alice")?)?
        .run(&["get", "pods", "-n", "dev", "-v=0"])
        .await?;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("policy not loaded") || out.stderr.contains("ServiceUnavailable"),
        "{}",
        out.stderr
    );
    assert!(
        stack
            .emulator
            .request_log()
            .iter()
            .all(|r| !r.path.contains("/pods")),
        "nothing reaches the cluster without a policy"
    );
    if let Some(ops) = stack.ops_addr {
        let mut conn = tokio::net::TcpStream::connect(ops).await?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        conn.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut resp = String::new();
        conn.read_to_string(&mut resp).await?;
        assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
        // The upstream probe or the policy check reports first; either way not ready.
        assert!(resp.contains("not ready"), "{resp}");
        let mut conn = tokio::net::TcpStream::connect(ops).await?;
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut metrics = String::new();
        conn.read_to_string(&mut metrics).await?;
        assert!(
            metrics.contains("gatehouse_agent_policy_loaded 0"),
            "{metrics}"
        );
    }
    stack.shutdown().await;
    Ok(())
}

/// The shipped default policy, asked through the real `gatehouse` CLI: issue 5's item 6
/// case by case, and `policy check` accepting it.
#[tokio::test]
async fn default_policy_through_gatehouse_policy_test() -> anyhow::Result<()> {
    let cli = find_bin_dir()?.join("gatehouse");
    let policy = gatehouse_tests::harness::stack::default_policy();
    let check = tokio::process::Command::new(&cli)
        .args(["policy", "check"])
        .arg(&policy)
        .output()
        .await?;
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "alice",
            "engineers",
            "kubectl get pods -n prod",
            "engineers-read",
        ),
        (
            "alice",
            "engineers",
            "kubectl get secrets -n dev",
            "engineers-read",
        ),
        (
            "alice",
            "engineers",
            "kubectl get secrets -n kube-system",
            "engineers-no-kube-system-secrets",
        ),
        (
            "alice",
            "engineers",
            "kubectl exec -n kube-system coredns -- sh",
            "engineers-no-kube-system-exec",
        ),
        (
            "alice",
            "engineers",
            "kubectl exec -n dev web -- sh",
            "engineers-dev",
        ),
        (
            "alice",
            "engineers",
            "kubectl port-forward -n dev web 8080",
            "engineers-dev",
        ),
        (
            "alice",
            "engineers",
            "kubectl exec -n prod api -- sh",
            "engineers-prod-exec-needs-approval",
        ),
        (
            "alice",
            "engineers",
            "kubectl debug -n prod api",
            "engineers-prod-exec-needs-approval",
        ),
        (
            "alice",
            "engineers",
            "kubectl delete pod api -n prod",
            "default-deny",
        ),
        (
            "alice",
            "engineers",
            "kubectl delete ns dev",
            "namespace-delete-needs-approval",
        ),
        (
            "bob",
            "sre-leads",
            "kubectl delete ns prod",
            "namespace-delete-needs-approval",
        ),
        (
            "bob",
            "sre-leads",
            "kubectl create rolebinding x -n prod",
            "rbac-writes-need-approval",
        ),
        (
            "bob",
            "sre-leads",
            "kubectl exec -n prod api -- sh",
            "sre-leads-all",
        ),
        ("carol", "security", "kubectl get pods -A", "security-read"),
        (
            "carol",
            "security",
            "kubectl exec -n prod api -- sh",
            "default-deny",
        ),
    ];
    let mut wrong = Vec::new();
    for (user, group, line, rule) in cases {
        let out = tokio::process::Command::new(&cli)
            .args(["policy", "test"])
            .arg(&policy)
            .args(["--as", user, "--groups", group, "--"])
            .args(line.split_whitespace())
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let decided = stdout
            .lines()
            .find_map(|l| l.strip_prefix("rule:"))
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_default()
            .to_string();
        if decided != *rule {
            wrong.push(format!(
                "{user} `{line}`: {decided} (want {rule})\n{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

/// The shipped default policy in force on a running agent: its masking rule names a
/// profile the agent has, so engineers' Secret reads are served (masked), not refused.
#[tokio::test]
async fn default_policy_serves_engineers_secret_reads_masked() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(gatehouse_tests::harness::stack::default_policy())?;
    let fx = start(&text).await?;
    let admin_config = fx.stack.dir().join("kubeconfig-admin");
    gatehouse_tests::harness::kubeconfig::write(
        &admin_config,
        &[fx.stack.emulator_admin_context()],
    )?;
    let admin = Kubectl::v1_32(&admin_config)?;
    admin
        .run(&[
            "create",
            "secret",
            "generic",
            "api-key",
            "-n",
            "dev",
            "--from-literal=key=hunter2-value",
        ])
        .await?
        .ok()?;
    let out = fx
        .until(
            "alice",
            &[
                "get",
                "secret",
                "api-key",
                "-n",
                "dev",
                "-o",
                "jsonpath={.data.key}",
            ],
            true,
        )
        .await?;
    use base64::Engine as _;
    let shown = base64::engine::general_purpose::STANDARD.decode(out.trim())?;
    assert_eq!(shown, b"***MASKED***", "{out}");
    let e = wait_event(&fx.audit, |e| {
        e.resource == "secrets" && e.name == "api-key"
    })
    .await?;
    assert_eq!(
        (e.decision, e.decided_by.as_str()),
        (Decision::Allow, "engineers-read")
    );
    // The profile comes from the matching `secrets-masked` rule.
    assert_eq!(
        e.policy.as_ref().and_then(|p| p.mask.as_deref()),
        Some("default"),
        "{e:?}"
    );
    Ok(())
}
