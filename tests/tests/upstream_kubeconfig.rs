//! The agent outside the cluster: `--upstream-kubeconfig` points it at an API server (a
//! second emulator standing in for a real cluster) with its own credential taken from the
//! kubeconfig — a token, a client certificate, or an exec plugin — and real kubectl 1.32
//! lists pods through it. The cluster's request log shows the agent's identity from that
//! credential and the impersonated user. A broken kubeconfig stops the agent at start
//! with an error that names the problem.
//!
//! Needs the binaries: `cargo build -p gatehouse-agent -p gatehouse-collector --bins`.

use gatehouse_tests::emulator::{Emulator, EmulatorConfig, RuntimeConfig, Seed, UserInfo};
use gatehouse_tests::harness::kubeconfig::{self, Context, Credential};
use gatehouse_tests::harness::kubectl::Kubectl;
use gatehouse_tests::harness::stack::{Stack, StackOptions};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const AGENT_SA: &str = "system:serviceaccount:gatehouse:gatehouse-agent";
const DEV_POD: &str = "web-7d9f8b6c4-x2k9p";

/// "The real cluster": an emulator of its own, apart from the stack's built-in one.
async fn cluster(dir: &Path) -> anyhow::Result<Emulator> {
    Emulator::start(EmulatorConfig {
        dir: dir.join("cluster"),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        seed: Seed::Dev,
        runtime: RuntimeConfig {
            cgroup_root: None,
            work_dir: dir.join("cluster/runtime"),
        },
    })
    .await
}

/// Lets `user` impersonate, as deploy/agent-impersonation-rbac.yaml does for the agent's
/// service account, using kubectl as the cluster's admin.
async fn grant_impersonation(cluster: &Emulator, dir: &Path, user: &str) -> anyhow::Result<()> {
    let admin = dir.join("kubeconfig-cluster-admin");
    kubeconfig::write(
        &admin,
        &[Context {
            name: "admin".into(),
            server: cluster.url(),
            ca_file: cluster.ca_cert_path(),
            credential: Credential::Token(cluster.admin_token()),
            namespace: None,
        }],
    )?;
    Kubectl::v1_32(&admin)?
        .run(&[
            "create",
            "clusterrolebinding",
            &format!("impersonator-{user}"),
            "--clusterrole=gatehouse-impersonator",
            &format!("--user={user}"),
        ])
        .await?
        .ok()?;
    Ok(())
}

/// Polls the agent's `/readyz` until it answers 200 (bounded: 20 s).
async fn readyz_ok(ops: SocketAddr) -> anyhow::Result<()> {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        let attempt = async {
            let mut tcp = tokio::net::TcpStream::connect(ops).await?;
            tcp.write_all(b"GET /readyz HTTP/1.0\r\nHost: ops\r\n\r\n")
                .await?;
            let mut answer = String::new();
            tcp.read_to_string(&mut answer).await?;
            anyhow::Ok(answer)
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(answer))
                if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") =>
            {
                return Ok(());
            }
            Ok(Ok(answer)) => last = answer,
            Ok(Err(err)) => last = err.to_string(),
            Err(_) => last = "timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("/readyz never answered 200; last: {last:?}")
}

/// Starts the stack with the agent on `upstream_kubeconfig`, lists dev pods as alice
/// through it `times` times, and checks the cluster saw `agent_user` impersonating alice.
async fn alice_lists_pods(
    dir: &Path,
    cluster: &Emulator,
    upstream_kubeconfig: PathBuf,
    context: Option<&str>,
    agent_user: &str,
    times: usize,
) -> anyhow::Result<()> {
    let mut options = StackOptions::new(dir.join("stack"));
    options.upstream_kubeconfig = Some(upstream_kubeconfig);
    options.upstream_context = context.map(str::to_string);
    let stack = Stack::start(options).await?;
    // The readiness probe reaches the cluster with the same credential.
    if let Some(ops) = stack.ops_addr {
        readyz_ok(ops).await?;
    }
    let kubectl = Kubectl::v1_32(&stack.kubeconfig_for("alice")?)?;
    for _ in 0..times {
        let out = kubectl.run(&["get", "pods", "-n", "dev"]).await?.ok()?;
        assert!(out.stdout.contains(DEV_POD), "{}", out.stdout);
    }
    let log = cluster.request_log();
    let lists: Vec<_> = log
        .iter()
        .filter(|r| r.path == "/api/v1/namespaces/dev/pods" && r.verb == "list")
        .collect();
    assert_eq!(lists.len(), times, "{log:#?}");
    for list in lists {
        assert_eq!(list.user, agent_user, "{list:?}");
        assert_eq!(list.impersonated_user.as_deref(), Some("alice"), "{list:?}");
        assert!(
            list.impersonated_groups.iter().any(|g| g == "engineers"),
            "{list:?}"
        );
        assert_eq!(list.code, 200);
    }
    // The stack's own emulator is left aside: no pod list reached it.
    assert!(
        !stack
            .emulator
            .request_log()
            .iter()
            .any(|r| r.path.ends_with("/pods")),
        "the built-in emulator got agent traffic"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn token_user() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = cluster(dir.path()).await?;
    let path = dir.path().join("upstream-kubeconfig");
    // Two contexts; the second (not current) is the agent's, chosen by --upstream-context.
    let context = |name: &str, token: String| Context {
        name: name.into(),
        server: cluster.url(),
        ca_file: cluster.ca_cert_path(),
        credential: Credential::Token(token),
        namespace: None,
    };
    kubeconfig::write(
        &path,
        &[
            context("someone-else", "not-a-known-token".into()),
            context("gatehouse-agent", cluster.agent_token()),
        ],
    )?;
    alice_lists_pods(
        dir.path(),
        &cluster,
        path,
        Some("gatehouse-agent"),
        AGENT_SA,
        1,
    )
    .await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn client_certificate_user() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = cluster(dir.path()).await?;
    let user = "gatehouse-agent-mtls";
    grant_impersonation(&cluster, dir.path(), user).await?;
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(conf.join("certs"))?;
    cluster
        .issue_client_cert(user, &["gatehouse:agents"])?
        .write(&conf.join("certs"), "agent")?;
    std::fs::copy(cluster.ca_cert_path(), conf.join("ca.crt"))?;
    // Hand-written YAML, with paths relative to the kubeconfig's directory.
    let path = conf.join("kubeconfig.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: agent\n\
             clusters:\n- name: real\n  cluster:\n    server: {}\n    certificate-authority: ca.crt\n\
             users:\n- name: agent\n  user:\n    client-certificate: certs/agent.crt\n    client-key: certs/agent.key\n\
             contexts:\n- name: agent\n  context:\n    cluster: real\n    user: agent\n",
            cluster.url()
        ),
    )?;
    alice_lists_pods(dir.path(), &cluster, path, None, user, 1).await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn exec_plugin_user_runs_once_and_is_cached() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = cluster(dir.path()).await?;
    let user = "gatehouse-agent-exec";
    let token = "token-issued-by-the-exec-plugin";
    cluster.add_token(token, UserInfo::new(user, &["gatehouse:agents"]));
    grant_impersonation(&cluster, dir.path(), user).await?;
    let runs = dir.path().join("plugin-runs");
    let plugin = dir.path().join("get-token.sh");
    let expires = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\n\
             # Counts its runs; the agent must pass KUBERNETES_EXEC_INFO.\n\
             [ -n \"$KUBERNETES_EXEC_INFO\" ] || {{ echo 'no exec info' >&2; exit 1; }}\n\
             echo \"$KUBERNETES_EXEC_INFO\" >> '{runs}'\n\
             printf '%s' '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\
             \"status\":{{\"token\":\"{token}\",\"expirationTimestamp\":\"{expires}\"}}}}'\n",
            runs = runs.display(),
        ),
    )?;
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755))?;
    let path = dir.path().join("upstream-kubeconfig");
    kubeconfig::write(
        &path,
        &[Context {
            name: "agent".into(),
            server: cluster.url(),
            ca_file: cluster.ca_cert_path(),
            credential: Credential::Exec {
                command: plugin,
                args: Vec::new(),
            },
            namespace: None,
        }],
    )?;
    alice_lists_pods(dir.path(), &cluster, path, None, user, 3).await?;
    let calls = std::fs::read_to_string(&runs)?;
    assert_eq!(
        calls.lines().count(),
        1,
        "plugin ran more than once:\n{calls}"
    );
    assert!(
        calls.contains("\"kind\":\"ExecCredential\"") && calls.contains("\"interactive\":false"),
        "{calls}"
    );
    cluster.shutdown().await;
    Ok(())
}

/// Starts the stack with `kubeconfig` and returns the start-up error (with the agent's log).
async fn start_error(dir: &Path, kubeconfig: PathBuf, context: Option<&str>) -> String {
    let mut options = StackOptions::new(dir.join("stack"));
    options.upstream_kubeconfig = Some(kubeconfig);
    options.upstream_context = context.map(str::to_string);
    match Stack::start(options).await {
        Ok(stack) => {
            stack.shutdown().await;
            "the agent started".into()
        }
        Err(err) => format!("{err:#}"),
    }
}

#[tokio::test]
async fn bad_kubeconfigs_stop_the_start_with_a_clear_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = cluster(dir.path()).await?;
    let path = dir.path().join("upstream-kubeconfig");
    kubeconfig::write(
        &path,
        &[Context {
            name: "agent".into(),
            server: cluster.url(),
            ca_file: cluster.ca_cert_path(),
            credential: Credential::ClientCert {
                cert: dir.path().join("missing/agent.crt"),
                key: dir.path().join("missing/agent.key"),
            },
            namespace: None,
        }],
    )?;

    let err = start_error(&dir.path().join("a"), path.clone(), Some("prod")).await;
    assert!(
        err.contains("exited during start-up")
            && err.contains("context \"prod\" not found (contexts: \"agent\")"),
        "{err}"
    );

    let err = start_error(&dir.path().join("b"), path.clone(), None).await;
    assert!(
        err.contains("exited during start-up")
            && err.contains("reading client certificate")
            && err.contains("missing/agent.crt"),
        "{err}"
    );

    let err = start_error(&dir.path().join("c"), dir.path().join("nope.yaml"), None).await;
    assert!(
        err.contains("reading kubeconfig") && err.contains("nope.yaml"),
        "{err}"
    );
    // Nothing reached the cluster.
    assert!(cluster.request_log().is_empty());
    cluster.shutdown().await;
    Ok(())
}

/// `cargo xtask dev --upstream-kubeconfig PATH --context C` runs `dev-stack` with those
/// flags: its agent must reach the cluster of that context, and its kubeconfig must not
/// offer the (unused) emulator.
#[tokio::test]
async fn dev_stack_runs_in_front_of_an_upstream_kubeconfig() -> anyhow::Result<()> {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir()?;
    let cluster = cluster(dir.path()).await?;
    let path = dir.path().join("upstream-kubeconfig");
    kubeconfig::write(
        &path,
        &[
            Context {
                name: "default".into(),
                server: cluster.url(),
                ca_file: cluster.ca_cert_path(),
                credential: Credential::Token("unknown".into()),
                namespace: None,
            },
            Context {
                name: "staging".into(),
                server: cluster.url(),
                ca_file: cluster.ca_cert_path(),
                credential: Credential::Token(cluster.agent_token()),
                namespace: None,
            },
        ],
    )?;
    let out = dir.path().join("dev");
    let bin_dir = gatehouse_tests::harness::stack::find_bin_dir()?;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dev-stack"))
        .arg(format!("--out-dir={}", out.display()))
        .arg(format!("--upstream-kubeconfig={}", path.display()))
        .arg("--context=staging")
        .arg("--no-cgroups")
        .env("GATEHOUSE_BIN_DIR", &bin_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !out.join("ready").exists() {
        if let Some(status) = child.try_wait()? {
            let output = child.wait_with_output().await?;
            anyhow::bail!(
                "dev-stack exited ({status}): {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        anyhow::ensure!(Instant::now() < deadline, "dev-stack not ready in 60s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kubeconfig = out.join("kubeconfig");
    let written = std::fs::read_to_string(&kubeconfig)?;
    assert!(!written.contains("emulator-admin"), "{written}");
    let env = std::fs::read_to_string(out.join("env"))?;
    assert!(
        env.contains(&format!("GATEHOUSE_UPSTREAM_KUBECONFIG={}", path.display())),
        "{env}"
    );
    let result = Kubectl::v1_32(&kubeconfig)?
        .run(&["--context", "alice", "get", "pods", "-n", "dev"])
        .await;
    // Stop dev-stack (SIGTERM, as Ctrl-C would) before judging, so nothing is left running.
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let stopped = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    let listed = result?.ok()?;
    assert!(listed.stdout.contains(DEV_POD), "{}", listed.stdout);
    let log = cluster.request_log();
    assert!(
        log.iter().any(|r| r.path == "/api/v1/namespaces/dev/pods"
            && r.user == AGENT_SA
            && r.impersonated_user.as_deref() == Some("alice")),
        "{log:#?}"
    );
    assert!(
        matches!(stopped, Ok(Ok(status)) if status.success()),
        "{stopped:?}"
    );
    cluster.shutdown().await;
    Ok(())
}

/// `tls-server-name` replaces the URL's host in the server-certificate check: a name the
/// certificate carries works, one it does not carry fails the TLS handshake.
#[tokio::test]
async fn tls_server_name_is_what_the_certificate_is_checked_against() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = cluster(dir.path()).await?;
    for (name, works) in [
        ("kubernetes.default.svc", true),
        ("not-in-the-cert.example", false),
    ] {
        let path = dir.path().join(format!("kubeconfig-{name}"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: a\n\
                 clusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\n    tls-server-name: {name}\n\
                 users:\n- name: u\n  user:\n    token: {}\n\
                 contexts:\n- name: a\n  context:\n    cluster: c\n    user: u\n",
                cluster.url(),
                cluster.ca_cert_path().display(),
                cluster.agent_token()
            ),
        )?;
        let mut options = StackOptions::new(dir.path().join(format!("stack-{name}")));
        options.upstream_kubeconfig = Some(path);
        let stack = Stack::start(options).await?;
        let out = Kubectl::v1_32(&stack.kubeconfig_for("alice")?)?
            .run(&["get", "pods", "-n", "dev", "--request-timeout=20s"])
            .await?;
        stack.shutdown().await;
        if works {
            let out = out.ok()?;
            assert!(out.stdout.contains(DEV_POD), "{}", out.stdout);
        } else {
            assert_ne!(out.code, 0, "{name}: {}", out.stdout);
        }
    }
    // Only the agent with the good name got through to the cluster.
    let log = cluster.request_log();
    let lists = log
        .iter()
        .filter(|r| r.path == "/api/v1/namespaces/dev/pods")
        .count();
    assert_eq!(lists, 1, "{log:#?}");
    cluster.shutdown().await;
    Ok(())
}
