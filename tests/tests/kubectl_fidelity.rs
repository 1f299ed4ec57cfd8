//! Emulator fidelity: real kubectl 1.32 and 1.20 against the Kubernetes API emulator,
//! asserting what a user at the terminal would see; every scenario that does not depend on
//! the emulator's own tokens also runs through the real `gatehouse-agent` (as dev user bob,
//! cluster-admin via sre-leads), checking that the API server saw only the agent's
//! credential impersonating bob.

use anyhow::Context as _;
use gatehouse_tests::emulator::runtime::RuntimeConfig;
use gatehouse_tests::emulator::{Emulator, EmulatorConfig, Seed, UserInfo};
use gatehouse_tests::harness::kubeconfig::{self, Context, Credential};
use gatehouse_tests::harness::kubectl::Kubectl;
use gatehouse_tests::harness::stack::{Stack, StackOptions};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);

/// Which kubectl a test runs.
#[derive(Clone, Copy, Debug)]
enum KubectlVersion {
    V1_32,
    V1_20,
}

/// Which kubectl, and whether it talks to the emulator directly or through the agent.
#[derive(Clone, Copy, Debug)]
struct Version {
    kubectl: KubectlVersion,
    via_agent: bool,
}

/// The agent's own identity at the API server (the emulator's seeded service account).
const AGENT_USER: &str = "system:serviceaccount:gatehouse:gatehouse-agent";
/// The dev user the through-agent runs act as (cluster-admin via sre-leads).
const AGENT_RUN_USER: &str = "bob";

/// What kubectl talks to.
enum Backend {
    Direct(Emulator),
    Agent(Box<Stack>),
}

/// One emulator (alone or behind a full stack) in a temp dir, plus an admin kubeconfig.
struct Fixture {
    backend: Backend,
    dir: tempfile::TempDir,
    admin_kubeconfig: PathBuf,
    version: Version,
}

impl Fixture {
    async fn start(version: Version) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let cgroup_root = is_root().then(|| {
            PathBuf::from(format!(
                "/sys/fs/cgroup/unified/gatehouse-test-{}-{}",
                std::process::id(),
                rand::random::<u32>()
            ))
        });
        if version.via_agent {
            let mut options = StackOptions::new(dir.path().join("stack"));
            options.cgroup_root = cgroup_root;
            let stack = Stack::start(options).await?;
            let admin_kubeconfig = stack.kubeconfig_for(AGENT_RUN_USER)?;
            return Ok(Self {
                backend: Backend::Agent(Box::new(stack)),
                dir,
                admin_kubeconfig,
                version,
            });
        }
        let emulator = Emulator::start(EmulatorConfig {
            dir: dir.path().join("emulator"),
            listen: "127.0.0.1:0".parse()?,
            seed: Seed::Empty,
            runtime: RuntimeConfig {
                cgroup_root,
                work_dir: dir.path().join("runtime"),
            },
        })
        .await?;
        let admin_kubeconfig = dir.path().join("admin.kubeconfig");
        kubeconfig::write(
            &admin_kubeconfig,
            &[Context {
                name: "admin".into(),
                server: emulator.url(),
                ca_file: emulator.ca_cert_path(),
                credential: Credential::Token(emulator.admin_token()),
                namespace: None,
            }],
        )?;
        Ok(Self {
            backend: Backend::Direct(emulator),
            dir,
            admin_kubeconfig,
            version,
        })
    }

    fn emulator(&self) -> &Emulator {
        match &self.backend {
            Backend::Direct(emulator) => emulator,
            Backend::Agent(stack) => &stack.emulator,
        }
    }

    fn kubectl(&self) -> anyhow::Result<Kubectl> {
        self.kubectl_with(&self.admin_kubeconfig)
    }

    fn kubectl_with(&self, kubeconfig: &std::path::Path) -> anyhow::Result<Kubectl> {
        match self.version.kubectl {
            KubectlVersion::V1_32 => Kubectl::v1_32(kubeconfig),
            KubectlVersion::V1_20 => Kubectl::v1_20(kubeconfig),
        }
    }

    /// A kubeconfig for a token user that the emulator knows as `user` in `groups`.
    fn user_kubeconfig(&self, user: &str, groups: &[&str]) -> anyhow::Result<PathBuf> {
        let token = format!("token-{user}-{}", rand::random::<u64>());
        self.emulator().add_token(
            &token,
            UserInfo {
                username: user.into(),
                uid: format!("uid-{user}"),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                extra: Default::default(),
            },
        );
        let path = self.dir.path().join(format!("{user}.kubeconfig"));
        kubeconfig::write(
            &path,
            &[Context {
                name: user.into(),
                server: self.emulator().url(),
                ca_file: self.emulator().ca_cert_path(),
                credential: Credential::Token(token),
                namespace: None,
            }],
        )?;
        Ok(path)
    }

    /// Writes `yaml` to a file and `kubectl apply -f`s it; returns stdout.
    async fn apply(&self, yaml: &str) -> anyhow::Result<String> {
        let path = self
            .dir
            .path()
            .join(format!("manifest-{}.yaml", rand::random::<u64>()));
        std::fs::write(&path, yaml)?;
        let path = path.to_string_lossy().into_owned();
        Ok(self
            .kubectl()?
            .run(&["apply", "-f", &path])
            .await?
            .ok()?
            .stdout)
    }

    /// Creates namespace `ns` and a long-running pod `name` in it, waiting until Running.
    async fn running_pod(&self, ns: &str, name: &str, script: &str) -> anyhow::Result<()> {
        let kubectl = self.kubectl()?;
        let _ = kubectl.run(&["create", "namespace", ns]).await?;
        let manifest = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {"containers": [{"name": "main", "image": "busybox",
                "command": ["sh", "-c", script]}]}
        });
        self.apply(&manifest.to_string()).await?;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let out = kubectl
                .run(&[
                    "get",
                    "pod",
                    name,
                    "-n",
                    ns,
                    "-o",
                    "jsonpath={.status.phase}",
                ])
                .await?;
            if out.stdout == "Running" {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "pod {ns}/{name} never Running: {out:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Through the agent, first checks the API server's request log: every request came
    /// with the agent's credential impersonating bob, none with bob's own token. Then stops.
    async fn stop(self) {
        if let Backend::Agent(stack) = &self.backend {
            let log = stack.emulator.request_log();
            assert!(
                log.iter()
                    .any(|r| r.impersonated_user.as_deref() == Some(AGENT_RUN_USER)),
                "no impersonated request reached the emulator"
            );
            for r in &log {
                assert_eq!(r.user, AGENT_USER, "not the agent's credential: {r:?}");
                assert_eq!(
                    r.impersonated_user.as_deref(),
                    Some(AGENT_RUN_USER),
                    "request not impersonating bob: {r:?}"
                );
                assert!(
                    r.impersonated_groups.iter().any(|g| g == "sre-leads"),
                    "bob's groups not impersonated: {r:?}"
                );
            }
        }
        match self.backend {
            Backend::Direct(emulator) => emulator.shutdown().await,
            Backend::Agent(stack) => stack.shutdown().await,
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Splits a kubectl table into rows of whitespace-separated cells.
fn table(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

const CONFIGMAP: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: team-a\ndata:\n  color: blue\n";

async fn get_all_namespaces_prints_server_table(v: Version) -> anyhow::Result<()> {
    let fx = Fixture::start(v).await?;
    fx.running_pod("team-a", "web", "sleep 3600").await?;
    let out = fx.kubectl()?.run(&["get", "pods", "-A"]).await?.ok()?;
    let rows = table(&out.stdout);
    assert_eq!(
        rows[0],
        ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{}",
        out.stdout
    );
    let web = rows.iter().find(|r| r[1] == "web").context("web row")?;
    assert_eq!(&web[..5], ["team-a", "web", "1/1", "Running", "0"]);
    let ns = fx.kubectl()?.run(&["get", "namespaces"]).await?.ok()?;
    let rows = table(&ns.stdout);
    assert_eq!(rows[0], ["NAME", "STATUS", "AGE"]);
    for name in ["default", "kube-system", "team-a"] {
        assert!(
            rows.iter().any(|r| r[0] == name && r[1] == "Active"),
            "{name} missing:\n{}",
            ns.stdout
        );
    }
    let wide = fx
        .kubectl()?
        .run(&["get", "pods", "-n", "team-a", "-o", "wide"])
        .await?
        .ok()?;
    let header = &table(&wide.stdout)[0];
    assert!(
        header.contains(&"IP".to_string()) && header.contains(&"NODE".to_string()),
        "{}",
        wide.stdout
    );
    fx.stop().await;
    Ok(())
}

async fn output_formats_yaml_json_jsonpath(v: Version) -> anyhow::Result<()> {
    let fx = Fixture::start(v).await?;
    fx.kubectl()?
        .run(&["create", "namespace", "team-a"])
        .await?
        .ok()?;
    fx.apply(CONFIGMAP).await?;
    let k = fx.kubectl()?;
    let yaml = k
        .run(&["get", "configmap", "settings", "-n", "team-a", "-o", "yaml"])
        .await?
        .ok()?;
    assert!(yaml.stdout.contains("kind: ConfigMap"), "{}", yaml.stdout);
    assert!(yaml.stdout.contains("color: blue"), "{}", yaml.stdout);
    assert!(yaml.stdout.contains("resourceVersion:"), "{}", yaml.stdout);
    let json = k
        .run(&["get", "configmap", "settings", "-n", "team-a", "-o", "json"])
        .await?
        .ok()?;
    let parsed: serde_json::Value = serde_json::from_str(&json.stdout)?;
    assert_eq!(parsed["data"]["color"], "blue");
    assert_eq!(parsed["metadata"]["namespace"], "team-a");
    assert!(
        parsed["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty())
    );
    let path = k
        .run(&[
            "get",
            "configmap",
            "settings",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.data.color}",
        ])
        .await?
        .ok()?;
    assert_eq!(path.stdout, "blue");
    let list = k
        .run(&[
            "get",
            "configmaps",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .await?
        .ok()?;
    assert!(
        list.stdout.split(' ').any(|n| n == "settings"),
        "{}",
        list.stdout
    );
    fx.stop().await;
    Ok(())
}

async fn apply_creates_then_configures_then_leaves_unchanged(v: Version) -> anyhow::Result<()> {
    let fx = Fixture::start(v).await?;
    fx.kubectl()?
        .run(&["create", "namespace", "team-a"])
        .await?
        .ok()?;
    assert_eq!(
        fx.apply(CONFIGMAP).await?.trim(),
        "configmap/settings created"
    );
    assert_eq!(
        fx.apply(CONFIGMAP).await?.trim(),
        "configmap/settings unchanged"
    );
    let changed = CONFIGMAP.replace("blue", "green");
    assert_eq!(
        fx.apply(&changed).await?.trim(),
        "configmap/settings configured"
    );
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: team-a\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.25\n        ports:\n        - containerPort: 80\n      - name: sidecar\n        image: busybox:1\n";
    assert_eq!(
        fx.apply(deployment).await?.trim(),
        "deployment.apps/web created"
    );
    // A strategic-merge change inside a list keyed by name.
    let bumped = deployment.replace("nginx:1.25", "nginx:1.27");
    assert_eq!(
        fx.apply(&bumped).await?.trim(),
        "deployment.apps/web configured"
    );
    let k = fx.kubectl()?;
    let images = k
        .run(&[
            "get",
            "deployment",
            "web",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].image}",
        ])
        .await?
        .ok()?;
    assert_eq!(images.stdout, "nginx:1.27 busybox:1");
    let color = k
        .run(&[
            "get",
            "cm",
            "settings",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.data.color}",
        ])
        .await?
        .ok()?;
    assert_eq!(color.stdout, "green");
    let deploys = k.run(&["get", "deployments", "-n", "team-a"]).await?.ok()?;
    let rows = table(&deploys.stdout);
    assert_eq!(rows[0], ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert_eq!(&rows[1][..4], ["web", "2/2", "2", "2"]);
    fx.stop().await;
    Ok(())
}

async fn patch_strategic_merge_and_json(v: Version) -> anyhow::Result<()> {
    let fx = Fixture::start(v).await?;
    fx.kubectl()?
        .run(&["create", "namespace", "team-a"])
        .await?
        .ok()?;
    fx.apply(CONFIGMAP).await?;
    let k = fx.kubectl()?;
    let out = k
        .run(&[
            "patch",
            "configmap",
            "settings",
            "-n",
            "team-a",
            "-p",
            r#"{"data":{"size":"xl"}}"#,
        ])
        .await?
        .ok()?;
    assert_eq!(out.stdout.trim(), "configmap/settings patched");
    let out = k
        .run(&[
            "patch",
            "configmap",
            "settings",
            "-n",
            "team-a",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"color":null}}"#,
        ])
        .await?
        .ok()?;
    assert_eq!(out.stdout.trim(), "configmap/settings patched");
    let out = k
        .run(&[
            "patch",
            "configmap",
            "settings",
            "-n",
            "team-a",
            "--type",
            "json",
            "-p",
            r#"[{"op":"add","path":"/data/shape","value":"round"}]"#,
        ])
        .await?
        .ok()?;
    assert_eq!(out.stdout.trim(), "configmap/settings patched");
    let data = k
        .run(&[
            "get",
            "cm",
            "settings",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.data}",
        ])
        .await?
        .ok()?;
    let data: serde_json::Value = serde_json::from_str(&data.stdout)?;
    assert_eq!(data, serde_json::json!({"size": "xl", "shape": "round"}));
    fx.stop().await;
    Ok(())
}

async fn delete_and_not_found_errors(v: Version) -> anyhow::Result<()> {
    let fx = Fixture::start(v).await?;
    let k = fx.kubectl()?;
    k.run(&["create", "namespace", "team-a"]).await?.ok()?;
    fx.apply(CONFIGMAP).await?;
    let again = k.run(&["create", "namespace", "team-a"]).await?;
    assert_eq!(again.code, 1);
    assert_eq!(
        again.stderr.trim(),
        r#"Error from server (AlreadyExists): namespaces "team-a" already exists"#
    );
    let out = k
        .run(&["delete", "configmap", "settings", "-n", "team-a"])
        .await?
        .ok()?;
    assert_eq!(out.stdout.trim(), r#"configmap "settings" deleted"#);
    let gone = k
        .run(&["get", "configmap", "settings", "-n", "team-a"])
        .await?;
    assert_eq!(gone.code, 1);
    assert_eq!(
        gone.stderr.trim(),
        r#"Error from server (NotFound): configmaps "settings" not found"#
    );
    let no_ns = k.run(&["get", "pods", "-n", "nowhere"]).await?.ok()?;
    assert_eq!(
        no_ns.stderr.trim(),
        "No resources found in nowhere namespace."
    );
    fx.stop().await;
    Ok(())
}

async fn watch_sees_later_changes(v: Version) -> anyhow::Result<()> {
    let fx = Fixture::start(v).await?;
    let k = fx.kubectl()?;
    k.run(&["create", "namespace", "team-a"]).await?.ok()?;
    fx.apply(CONFIGMAP).await?;
    let mut watch = k.spawn(&["get", "configmaps", "-n", "team-a", "-w"])?;
    watch.wait_line(WAIT, |l| l.starts_with("settings")).await?;
    k.run(&[
        "create",
        "configmap",
        "later",
        "-n",
        "team-a",
        "--from-literal=a=b",
    ])
    .await?
    .ok()?;
    let line = watch.wait_line(WAIT, |l| l.starts_with("later")).await?;
    assert_eq!(table(&line)[0][..2], ["later".to_string(), "1".to_string()]);
    watch.stop().await;
    fx.stop().await;
    Ok(())
}

async fn logs_follow_streams_new_lines(v: Version) -> anyhow::Result<()> {
    let fx = Fixture::start(v).await?;
    fx.running_pod(
        "team-a",
        "ticker",
        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
    )
    .await?;
    let k = fx.kubectl()?;
    let mut follow = k.spawn(&["logs", "-f", "ticker", "-n", "team-a"])?;
    follow.wait_line(WAIT, |l| l == "tick 0").await?;
    // Lines written after kubectl connected arrive too: the stream is live.
    follow.wait_line(WAIT, |l| l == "tick 12").await?;
    follow.stop().await;
    let tail = k
        .run(&["logs", "ticker", "-n", "team-a", "--tail=1"])
        .await?
        .ok()?;
    assert!(tail.stdout.starts_with("tick "), "{tail:?}");
    assert_eq!(tail.stdout.lines().count(), 1);
    fx.stop().await;
    Ok(())
}

async fn exec_non_interactive_streams_and_exit_code(
    v: Version,
    k: Kubectl,
    fx: &Fixture,
) -> anyhow::Result<()> {
    let _ = v;
    let out = k
        .run(&[
            "exec",
            "box",
            "-n",
            "team-a",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ])
        .await?;
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(out.stdout, "out\n");
    assert!(out.stderr.contains("err\n"), "{out:?}");
    assert!(
        out.stderr.contains("command terminated with exit code 3"),
        "{out:?}"
    );
    let echoed = k
        .run_with_stdin(
            &[
                "exec",
                "-i",
                "box",
                "-n",
                "team-a",
                "--",
                "sh",
                "-c",
                "tr a-z A-Z",
            ],
            Some(b"piped script\n"),
        )
        .await?
        .ok()?;
    assert_eq!(echoed.stdout, "PIPED SCRIPT\n");
    let _ = fx;
    Ok(())
}

async fn exec_non_interactive(v: Version) -> anyhow::Result<()> {
    let fx = Fixture::start(v).await?;
    fx.running_pod("team-a", "box", "sleep 3600").await?;
    exec_non_interactive_streams_and_exit_code(v, fx.kubectl()?, &fx).await?;
    if matches!(v.kubectl, KubectlVersion::V1_32) {
        // The SPDY fallback path of kubectl 1.32.
        let spdy = fx
            .kubectl()?
            .with_env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
        exec_non_interactive_streams_and_exit_code(v, spdy, &fx).await?;
    }
    fx.stop().await;
    Ok(())
}

async fn exec_interactive_tty(v: Version) -> anyhow::Result<()> {
    let fx = Fixture::start(v).await?;
    fx.running_pod("team-a", "box", "sleep 3600").await?;
    let k = fx.kubectl()?;
    let mut pty = k.spawn_in_pty(&["exec", "-it", "box", "-n", "team-a", "--", "sh"])?;
    pty.send(b"echo answer=$((6*7))\r")?;
    pty.wait_for("answer=42", WAIT).await?;
    // kubectl sends the terminal size on the resize channel: the remote shell sees it.
    // It travels apart from stdin (kubectl copies stdin and sends resizes from separate
    // goroutines, and the runtime applies them separately, as kubelet does), so nothing
    // orders it before the shell's first commands: the shell waits for the size rather
    // than reading it once (reading it once was this test's flake).
    pty.send(
        b"until [ \"$(stty size)\" = '40 120' ]; do sleep 0.1; done; echo size=$(stty size)\r",
    )?;
    pty.wait_for("size=40 120", WAIT).await?;
    pty.send(b"exit 0\r")?;
    assert_eq!(pty.wait_exit(WAIT).await?, 0, "{}", pty.screen());
    fx.stop().await;
    Ok(())
}

async fn cp_uploads_and_downloads(v: Version) -> anyhow::Result<()> {
    let fx = Fixture::start(v).await?;
    fx.running_pod("team-a", "box", "sleep 3600").await?;
    let k = fx.kubectl()?;
    let remote_dir = fx.dir.path().join("in-container");
    std::fs::create_dir_all(&remote_dir)?;
    let local = fx.dir.path().join("upload.txt");
    let contents: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&local, &contents)?;
    let remote = format!("team-a/box:{}/upload.txt", remote_dir.display());
    k.run(&["cp", &local.to_string_lossy(), &remote])
        .await?
        .ok()?;
    assert_eq!(
        std::fs::read_to_string(remote_dir.join("upload.txt"))?,
        contents
    );
    let back = fx.dir.path().join("download.txt");
    k.run(&["cp", &remote, &back.to_string_lossy()])
        .await?
        .ok()?;
    assert_eq!(std::fs::read_to_string(&back)?, contents);
    fx.stop().await;
    Ok(())
}

async fn port_forward_reaches_pod_port(v: Version) -> anyhow::Result<()> {
    let fx = Fixture::start(v).await?;
    fx.running_pod("team-a", "box", "sleep 3600").await?;
    // The pod's port P is the loopback port P: an echo server stands in for the app.
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let pod_port = server.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = server.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 || sock.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let local_port = gatehouse_tests::harness::ports::free_loopback_addr()?.port();
    let k = fx.kubectl()?;
    let mapping = format!("{local_port}:{pod_port}");
    let mut pf = k.spawn(&["port-forward", "-n", "team-a", "pod/box", &mapping])?;
    pf.wait_line(WAIT, |l| l.starts_with("Forwarding from 127.0.0.1:"))
        .await?;
    for round in 0..2 {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", local_port)).await?;
        let msg = format!("hello through the tunnel {round}");
        conn.write_all(msg.as_bytes()).await?;
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(WAIT, conn.read_exact(&mut got)).await??;
        assert_eq!(String::from_utf8_lossy(&got), msg);
    }
    pf.stop().await;
    fx.stop().await;
    Ok(())
}

async fn auth_can_i_follows_rbac(v: Version) -> anyhow::Result<()> {
    let fx = Fixture::start(v).await?;
    let admin = fx.kubectl()?;
    admin.run(&["create", "namespace", "team-a"]).await?.ok()?;
    assert_eq!(
        admin
            .run(&["auth", "can-i", "delete", "namespaces"])
            .await?
            .ok()?
            .stdout
            .trim(),
        "yes"
    );
    admin
        .run(&[
            "create",
            "rolebinding",
            "viewers",
            "-n",
            "team-a",
            "--clusterrole=view",
            "--group=auditors",
        ])
        .await?
        .ok()?;
    let dave = fx.kubectl_with(&fx.user_kubeconfig("dave", &["auditors"])?)?;
    assert_eq!(
        dave.run(&["auth", "can-i", "list", "pods", "-n", "team-a"])
            .await?
            .ok()?
            .stdout
            .trim(),
        "yes"
    );
    let no = dave
        .run(&["auth", "can-i", "delete", "pods", "-n", "team-a"])
        .await?;
    assert_eq!((no.code, no.stdout.trim()), (1, "no"));
    let denied = dave
        .run(&["delete", "pod", "anything", "-n", "team-a"])
        .await?;
    assert_eq!(denied.code, 1);
    assert_eq!(
        denied.stderr.trim(),
        r#"Error from server (Forbidden): pods "anything" is forbidden: User "dave" cannot delete resource "pods" in API group "" in the namespace "team-a""#
    );
    fx.stop().await;
    Ok(())
}

async fn impersonation_needs_permission_and_is_recorded(v: Version) -> anyhow::Result<()> {
    let fx = Fixture::start(v).await?;
    let admin = fx.kubectl()?;
    admin.run(&["create", "namespace", "team-a"]).await?.ok()?;
    let as_erin = admin
        .run(&[
            "get",
            "pods",
            "-n",
            "team-a",
            "--as",
            "erin",
            "--as-group",
            "devs",
        ])
        .await?;
    // erin has no RBAC: the request is authorized as her, not as the admin.
    assert_eq!(as_erin.code, 1);
    assert!(
        as_erin
            .stderr
            .contains(r#"User "erin" cannot list resource "pods""#),
        "{as_erin:?}"
    );
    let log = fx.emulator().request_log();
    let rec = log
        .iter()
        .find(|r| r.impersonated_user.as_deref() == Some("erin") && r.path.ends_with("/pods"))
        .context("impersonated request in log")?;
    assert_eq!(rec.user, "emulator-admin");
    assert_eq!(rec.impersonated_groups, ["devs"]);
    assert_eq!(rec.verb, "list");
    assert_eq!(rec.code, 403);
    let dave = fx.kubectl_with(&fx.user_kubeconfig("dave", &["auditors"])?)?;
    let refused = dave
        .run(&["get", "pods", "-n", "team-a", "--as", "emulator-admin"])
        .await?;
    // kubectl words a refused impersonation differently per version (its discovery step
    // fails first), so the server's answer is checked in the request log.
    assert_eq!(refused.code, 1, "{refused:?}");
    let log = fx.emulator().request_log();
    assert!(
        log.iter().any(|r| r.user == "dave" && r.code == 403),
        "dave's impersonation attempt was not refused: {log:?}"
    );
    assert!(
        !log.iter()
            .any(|r| r.user == "dave" && r.impersonated_user.is_some() && r.code < 400),
        "dave impersonated someone: {log:?}"
    );
    fx.stop().await;
    Ok(())
}

async fn unauthenticated_is_told_to_log_in(v: Version) -> anyhow::Result<()> {
    let fx = Fixture::start(v).await?;
    let path = fx.dir.path().join("bad.kubeconfig");
    kubeconfig::write(
        &path,
        &[Context {
            name: "bad".into(),
            server: fx.emulator().url(),
            ca_file: fx.emulator().ca_cert_path(),
            credential: Credential::Token("not-a-known-token".into()),
            namespace: None,
        }],
    )?;
    let out = fx.kubectl_with(&path)?.run(&["get", "pods"]).await?;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("error: You must be logged in to the server"),
        "{out:?}"
    );
    fx.stop().await;
    Ok(())
}

/// Longer than twice the agent's longest timer (30 s: HTTP/1 header read, h2 keep-alive;
/// the others are 10 s or less), so an idle cut by the agent would show.
const QUIET: Duration = Duration::from_secs(61);

/// A watch that stays silent past every agent timer is not cut, and still delivers the
/// event that comes after the silence, chunk by chunk (the line arrives while the watch is
/// open, so nothing waits for the stream to end).
async fn quiet_watch_outlives_agent_timers(v: Version) -> anyhow::Result<()> {
    let fx = Fixture::start(v).await?;
    let k = fx.kubectl()?;
    k.run(&["create", "namespace", "team-a"]).await?.ok()?;
    fx.apply(CONFIGMAP).await?;
    let mut watch = k.spawn(&["get", "configmaps", "-n", "team-a", "-w"])?;
    watch.wait_line(WAIT, |l| l.starts_with("settings")).await?;
    tokio::time::sleep(QUIET).await;
    k.run(&[
        "create",
        "configmap",
        "after-the-quiet",
        "-n",
        "team-a",
        "--from-literal=a=b",
    ])
    .await?
    .ok()?;
    watch
        .wait_line(WAIT, |l| l.starts_with("after-the-quiet"))
        .await?;
    watch.stop().await;
    fx.stop().await;
    Ok(())
}

/// An exec session open when the agent is told to stop is tracked by the drain: the agent
/// waits for it up to `--drain-timeout` (2 s in the stack), then ends it itself and tells
/// kubectl why on the error channel (WebSocket channel 3 for 1.32, the SPDY error stream
/// for 1.20): kubectl exits non-zero and prints the agent's message instead of hanging.
async fn open_exec_session_is_ended_by_agent_shutdown(v: Version) -> anyhow::Result<()> {
    let mut fx = Fixture::start(v).await?;
    fx.running_pod("team-a", "box", "sleep 3600").await?;
    let k = fx.kubectl()?;
    let mut exec = k.spawn(&[
        "exec",
        "box",
        "-n",
        "team-a",
        "--",
        "sh",
        "-c",
        "echo started; sleep 3600",
    ])?;
    exec.wait_line(WAIT, |l| l == "started").await?;
    let Backend::Agent(stack) = &mut fx.backend else {
        anyhow::bail!("this scenario needs the agent");
    };
    let pid = stack.agent.pid().context("agent is running")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let code = exec.wait_exit(WAIT).await?;
    // kubectl can exit before the agent has logged the session's end: read the log once
    // the agent is gone.
    let exit = stack.agent.wait_exit(WAIT).await?;
    let log = std::fs::read_to_string(&stack.agent.log_path)?;
    let stderr = exec.stderr();
    assert_ne!(
        code, 0,
        "an exec ended by the agent is not a success: {stderr}"
    );
    assert!(
        stderr.contains("error: gateway restarting: the Gatehouse agent ended this session"),
        "kubectl did not print the agent's reason; stderr:\n{stderr}\nagent log:\n{}",
        stack.agent.log_tail()
    );
    assert!(exit.success(), "agent exit after SIGTERM: {exit}");
    assert!(
        log.contains("ending open sessions"),
        "agent did not end the open session itself:\n{}",
        stack.agent.log_tail()
    );
    assert!(
        log.contains("end_reason=agent_shutdown"),
        "session end reason missing:\n{}",
        stack.agent.log_tail()
    );
    fx.stop().await;
    Ok(())
}

/// The same with `exec -it` on a terminal (stdin and a TTY; kubectl in raw mode): kubectl
/// restores the terminal, prints the agent's reason and exits non-zero.
async fn open_tty_session_is_told_why_the_agent_ends_it(v: Version) -> anyhow::Result<()> {
    let mut fx = Fixture::start(v).await?;
    fx.running_pod("team-a", "box", "sleep 3600").await?;
    let k = fx.kubectl()?;
    let mut pty = k.spawn_in_pty(&["exec", "-it", "box", "-n", "team-a", "--", "sh"])?;
    pty.send(b"echo answer=$((6*7))\r")?;
    pty.wait_for("answer=42", WAIT).await?;
    let Backend::Agent(stack) = &mut fx.backend else {
        anyhow::bail!("this scenario needs the agent");
    };
    let pid = stack.agent.pid().context("agent is running")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    pty.wait_for(
        "error: gateway restarting: the Gatehouse agent ended this session",
        WAIT,
    )
    .await?;
    let code = pty.wait_exit(WAIT).await?;
    assert_ne!(code, 0, "{}", pty.screen());
    stack.agent.wait_exit(WAIT).await?;
    fx.stop().await;
    Ok(())
}

macro_rules! for_both_kubectls {
    ($module:ident, $via_agent:expr, $($name:ident),* $(,)?) => {
        mod $module {
            mod kubectl_1_32 {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() -> anyhow::Result<()> {
                        super::super::$name(super::super::Version {
                            kubectl: super::super::KubectlVersion::V1_32,
                            via_agent: $via_agent,
                        })
                        .await
                    }
                )*
            }
            mod kubectl_1_20 {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() -> anyhow::Result<()> {
                        super::super::$name(super::super::Version {
                            kubectl: super::super::KubectlVersion::V1_20,
                            via_agent: $via_agent,
                        })
                        .await
                    }
                )*
            }
        }
    };
}

for_both_kubectls!(
    direct,
    false,
    get_all_namespaces_prints_server_table,
    output_formats_yaml_json_jsonpath,
    apply_creates_then_configures_then_leaves_unchanged,
    patch_strategic_merge_and_json,
    delete_and_not_found_errors,
    watch_sees_later_changes,
    logs_follow_streams_new_lines,
    exec_non_interactive,
    exec_interactive_tty,
    cp_uploads_and_downloads,
    port_forward_reaches_pod_port,
    auth_can_i_follows_rbac,
    impersonation_needs_permission_and_is_recorded,
    unauthenticated_is_told_to_log_in,
);

// The last three direct scenarios (and the quiet watch, which is about the agent's timers) use emulator tokens and `--as`, which the agent replaces
// by OIDC and refuses (tests/tests/agent_proxy.rs covers both through the agent).
for_both_kubectls!(
    through_agent,
    true,
    get_all_namespaces_prints_server_table,
    output_formats_yaml_json_jsonpath,
    apply_creates_then_configures_then_leaves_unchanged,
    patch_strategic_merge_and_json,
    delete_and_not_found_errors,
    watch_sees_later_changes,
    logs_follow_streams_new_lines,
    exec_non_interactive,
    exec_interactive_tty,
    cp_uploads_and_downloads,
    port_forward_reaches_pod_port,
    quiet_watch_outlives_agent_timers,
    open_exec_session_is_ended_by_agent_shutdown,
    open_tty_session_is_told_why_the_agent_ends_it,
);
