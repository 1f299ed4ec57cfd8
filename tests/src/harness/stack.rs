//! Launches the whole local stack: Kubernetes API emulator and OIDC issuer in-process,
//! the real `gatehouse-collector` and `gatehouse-agent` binaries as child processes, and
//! kubeconfigs that point kubectl at the agent. Used by `dev-stack` and end-to-end tests.
//!
//! Binaries come from `GATEHOUSE_BIN_DIR`, else `$CARGO_TARGET_DIR/debug`, else
//! `<workspace>/target/debug`; build them first with `cargo build --workspace --bins`.
//! Every child is killed when its handle is dropped, so a failing test leaves nothing behind.

use super::kubeconfig::{self, Context, Credential};
use super::ports::free_loopback_addr;
use crate::emulator::{Emulator, EmulatorConfig, RuntimeConfig, Seed};
use crate::oidc::{DevUser, OidcIssuer};
use crate::pki::Ca;
use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long a child gets to answer before start-up fails.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a child gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The default dev users: alice (engineers), bob (sre-leads), carol (security).
pub fn dev_users() -> Vec<DevUser> {
    vec![
        DevUser::new("alice", &["engineers"]),
        DevUser::new("bob", &["sre-leads"]),
        DevUser::new("carol", &["security"]),
    ]
}

/// What to start.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Directory for the PKI, tokens, logs and kubeconfigs (created if missing).
    pub dir: PathBuf,
    /// Users the OIDC issuer knows.
    pub users: Vec<DevUser>,
    /// Emulator contents.
    pub seed: Seed,
    /// cgroup v2 directory for the emulator's containers (`None` = no cgroups).
    pub cgroup_root: Option<PathBuf>,
    /// Directory holding `gatehouse-agent` and `gatehouse-collector` (`None` = find them).
    pub bin_dir: Option<PathBuf>,
    /// Extra `gatehouse-agent` flags.
    pub agent_args: Vec<String>,
    // --- upstream kubeconfig ---
    /// Send the agent to the cluster of this kubeconfig (`--upstream-kubeconfig`) instead
    /// of the built-in emulator, which then still runs but gets no agent traffic.
    pub upstream_kubeconfig: Option<PathBuf>,
    /// Context of `upstream_kubeconfig` (default: its current-context).
    pub upstream_context: Option<String>,
    // --- audit store ---
    /// Where the collector stores audit events; `Some` turns on the collector's ingest
    /// listener and the agent's spool + shipper (mTLS, node name [`DEV_NODE`]). `None`:
    /// a collector without ingest, the agent keeps no spool (callers wire their own).
    pub audit_store: Option<AuditStore>,
    // --- EKS upstream credential ---
    /// Extra environment variables of the agent process (e.g. the AWS_* variables of IRSA).
    /// With `--upstream-credential=eks` in `agent_args`, the stack passes no
    /// `--upstream-token-file`.
    pub agent_env: Vec<(String, String)>,
    // --- policy ---
    /// Where the agent's policy comes from.
    pub policy: StackPolicy,
}

/// Where the stack's agent gets its policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StackPolicy {
    /// [`test_stack_policy`] as the agent's `--policy-file`: every verb for every user
    /// except impersonation, for tests about proxying rather than policy.
    #[default]
    TestStack,
    /// This file as the agent's `--policy-file`.
    AgentFile(PathBuf),
    /// This file as the collector's `--policy`, which the agent follows (`--policy-url`,
    /// `--policy-cache` in the stack directory). Needs an audit store: the policy is served
    /// on the collector's agent (ingest) listener.
    Collector(PathBuf),
    /// No policy anywhere: the agent answers every request 503.
    None,
}

/// `tests/policy/test-stack.yaml`.
pub fn test_stack_policy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policy/test-stack.yaml")
}

/// `deploy/policy/default.yaml`, the policy shipped for real clusters and the dev stack.
pub fn default_policy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/policy/default.yaml")
}

/// The node name of the stack's agent (its client certificate's CN) when it ships.
pub const DEV_NODE: &str = "dev-node";

/// The collector's audit store in a stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditStore {
    /// ClickHouse at this HTTP URL.
    ClickHouse {
        /// e.g. `http://127.0.0.1:8123`.
        url: String,
    },
    /// The embedded SQLite store in this directory.
    Embedded {
        /// `--store-dir`.
        dir: PathBuf,
    },
}

impl std::fmt::Display for AuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ClickHouse { url } => write!(f, "ClickHouse at {url}"),
            Self::Embedded { dir } => write!(f, "embedded SQLite in {}", dir.display()),
        }
    }
}

impl StackOptions {
    /// Defaults (dev users, `Seed::Dev`, no cgroups, binaries found automatically) in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            users: dev_users(),
            seed: Seed::Dev,
            cgroup_root: None,
            bin_dir: None,
            agent_args: Vec::new(),
            upstream_kubeconfig: None,
            upstream_context: None,
            audit_store: None,
            agent_env: Vec::new(),
            policy: StackPolicy::TestStack,
        }
    }
}

/// Where the built binaries are (see the module docs for the search order).
pub fn find_bin_dir() -> anyhow::Result<PathBuf> {
    let candidates: Vec<PathBuf> = if let Some(dir) = std::env::var_os("GATEHOUSE_BIN_DIR") {
        vec![PathBuf::from(dir)]
    } else {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut dirs = Vec::new();
        if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
            dirs.push(PathBuf::from(target).join("debug"));
        }
        dirs.push(workspace.join("target/debug"));
        dirs
    };
    for dir in &candidates {
        if dir.join("gatehouse-agent").is_file() && dir.join("gatehouse-collector").is_file() {
            return Ok(dir.clone());
        }
    }
    bail!(
        "gatehouse-agent/gatehouse-collector binaries not found in {}: run `cargo build --workspace --bins` \
         (with the same CARGO_TARGET_DIR) or set GATEHOUSE_BIN_DIR",
        candidates
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// A child process of the stack.
#[derive(Debug)]
pub struct ChildProcess {
    name: &'static str,
    child: tokio::process::Child,
    env: Vec<(String, String)>,
    /// Base URL it serves.
    pub url: String,
    /// File its stdout and stderr go to.
    pub log_path: PathBuf,
}

impl ChildProcess {
    fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        url: String,
        log_path: PathBuf,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        // Appended to, so a restarted process keeps its predecessor's log.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let child = tokio::process::Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Self {
            name,
            child,
            env,
            url,
            log_path,
        })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Fails if the process has exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited during start-up ({status}); log {}:\n{}",
                self.name,
                self.log_path.display(),
                self.log_tail()
            );
        }
        Ok(())
    }

    // --- hostile inputs / shutdown (H) ---
    /// Waits up to `timeout` for the process to exit by itself (e.g. after a SIGTERM the
    /// test sent), so that everything it logs on the way out is in its log file.
    pub async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .map_err(|_| anyhow::anyhow!("{} still running after {timeout:?}", self.name))?
            .with_context(|| format!("waiting for {}", self.name))
    }

    /// SIGTERM, wait up to [`STOP_GRACE`], then SIGKILL.
    pub async fn stop(mut self) {
        self.terminate().await;
    }

    /// [`ChildProcess::stop`] keeping the handle, so that it can be respawned.
    async fn terminate(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            if tokio::time::timeout(STOP_GRACE, self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
            tracing::warn!(name = self.name, "did not stop after SIGTERM; killing");
        }
        let _ = self.child.kill().await;
    }

    /// Starts `program` again in this handle's place (same log file, appended to).
    fn respawn(&mut self, program: &Path, args: &[String]) -> anyhow::Result<()> {
        let next = Self::spawn(
            self.name,
            program,
            args,
            self.url.clone(),
            self.log_path.clone(),
            self.env.clone(),
        )?;
        *self = next;
        Ok(())
    }
}

/// The running stack.
#[derive(Debug)]
pub struct Stack {
    /// The emulated API server (the agent's upstream).
    pub emulator: Emulator,
    /// The OIDC issuer users' tokens come from.
    pub issuer: OidcIssuer,
    /// `gatehouse-collector`.
    pub collector: ChildProcess,
    /// `gatehouse-agent`.
    pub agent: ChildProcess,
    /// The agent's ops listener (`/healthz`, `/readyz`, `/metrics`), unless the caller set
    /// `--ops-listen` itself.
    pub ops_addr: Option<SocketAddr>,
    /// The collector's ingest listener, when the stack has an audit store.
    pub ingest_addr: Option<SocketAddr>,
    /// The collector's audit store, if any.
    pub audit_store: Option<AuditStore>,
    dir: PathBuf,
    ca_path: PathBuf,
    // What the agent was started with, for `restart_agent`.
    agent_program: PathBuf,
    agent_args: Vec<String>,
    // What the collector was started with, for `restart_collector`.
    collector_program: PathBuf,
    collector_args: Vec<String>,
    ready_client: HttpsClient,
}

impl Stack {
    /// Starts everything and waits until the collector and the agent answer.
    pub async fn start(options: StackOptions) -> anyhow::Result<Stack> {
        let dir = options.dir.clone();
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki).with_context(|| format!("creating {}", pki.display()))?;
        let bin_dir = match &options.bin_dir {
            Some(dir) => dir.clone(),
            None => find_bin_dir()?,
        };

        let ca = Ca::new("gatehouse-dev-ca")?;
        let ca_path = pki.join("ca.crt");
        ca.write_cert(&ca_path)?;
        let (agent_cert, agent_key) = ca
            .issue_server("gatehouse-agent", &[])?
            .write(&pki, "agent")?;

        let emulator = Emulator::start(EmulatorConfig {
            dir: dir.join("emulator"),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: options.seed,
            runtime: RuntimeConfig {
                cgroup_root: options.cgroup_root.clone(),
                work_dir: dir.join("emulator/runtime"),
            },
        })
        .await
        .context("starting the Kubernetes API emulator")?;
        let issuer = OidcIssuer::start(options.users.clone(), &ca)
            .await
            .context("starting the OIDC issuer")?;

        let agent_token = dir.join("agent-token");
        write_private(&agent_token, &emulator.agent_token())?;

        let collector_addr = free_loopback_addr()?;
        let mut collector_args = vec![format!("--listen={collector_addr}")];
        // --- audit store ---
        // The dev CA issues the collector's serving certificate and the agent's client
        // certificate, and is the CA each side checks the other with.
        let mut ship_args = Vec::new();
        let mut ingest_addr = None;
        if let Some(store) = &options.audit_store {
            let ingest = free_loopback_addr()?;
            ingest_addr = Some(ingest);
            let (cert, key) = ca
                .issue_server("gatehouse-collector", &[])?
                .write(&pki, "collector")?;
            let (client_cert, client_key) = ca.issue_client(DEV_NODE, &[])?.write(&pki, "ship")?;
            collector_args.extend([
                format!("--ingest-listen={ingest}"),
                format!("--tls-cert-file={}", cert.display()),
                format!("--tls-key-file={}", key.display()),
                format!("--agent-ca-file={}", ca_path.display()),
            ]);
            match store {
                AuditStore::ClickHouse { url } => {
                    collector_args.push(format!("--clickhouse-url={url}"));
                }
                AuditStore::Embedded { dir } => {
                    collector_args.push(format!("--store-dir={}", dir.display()));
                }
            }
            ship_args.extend([
                format!("--node-name={DEV_NODE}"),
                format!("--spool-dir={}", dir.join("spool").display()),
                format!("--collector-url=https://{ingest}"),
                format!("--collector-ca-file={}", ca_path.display()),
                format!("--collector-client-cert={}", client_cert.display()),
                format!("--collector-client-key={}", client_key.display()),
            ]);
        }
        // --- policy ---
        let mut policy_args = Vec::new();
        match &options.policy {
            StackPolicy::TestStack => {
                policy_args.push(format!("--policy-file={}", test_stack_policy().display()));
            }
            StackPolicy::AgentFile(path) => {
                policy_args.push(format!("--policy-file={}", path.display()));
            }
            StackPolicy::Collector(path) => {
                let Some(ingest) = ingest_addr else {
                    bail!(
                        "StackPolicy::Collector needs an audit store (the collector's agent listener)"
                    );
                };
                collector_args.push(format!("--policy={}", path.display()));
                policy_args.extend([
                    format!("--policy-url=https://{ingest}"),
                    format!("--policy-cache={}", dir.join("policy-cache.yaml").display()),
                ]);
            }
            StackPolicy::None => {}
        }
        let collector_program = bin_dir.join("gatehouse-collector");
        let mut collector = ChildProcess::spawn(
            "gatehouse-collector",
            &collector_program,
            &collector_args,
            format!("http://{collector_addr}"),
            dir.join("collector.log"),
            Vec::new(),
        )?;

        let agent_addr = free_loopback_addr()?;
        let mut args = vec![
            format!("--listen={agent_addr}"),
            format!("--tls-cert={}", agent_cert.display()),
            format!("--tls-key={}", agent_key.display()),
        ];
        // --- upstream kubeconfig ---
        match &options.upstream_kubeconfig {
            Some(path) => {
                args.push(format!("--upstream-kubeconfig={}", path.display()));
                if let Some(context) = &options.upstream_context {
                    args.push(format!("--upstream-context={context}"));
                }
            }
            None => {
                args.extend([
                    format!("--upstream-url={}", emulator.url()),
                    format!("--upstream-ca-file={}", emulator.ca_cert_path().display()),
                ]);
                // --- EKS upstream credential: the agent brings its own ---
                if !options
                    .agent_args
                    .iter()
                    .any(|a| a == "--upstream-credential=eks")
                {
                    args.push(format!("--upstream-token-file={}", agent_token.display()));
                }
            }
        }
        args.extend([
            format!("--oidc-issuer-url={}", issuer.issuer_url()),
            format!("--oidc-ca-file={}", ca_path.display()),
            format!("--oidc-client-id={}", issuer.client_id()),
            "--drain-timeout=2s".into(),
        ]);
        args.extend(ship_args);
        args.extend(policy_args);
        // Parallel stacks must not fight over the default ops port: each gets its own,
        // unless the caller chose one.
        let mut ops_addr = None;
        if !options
            .agent_args
            .iter()
            .any(|a| a.starts_with("--ops-listen"))
        {
            let addr = free_loopback_addr()?;
            args.push(format!("--ops-listen={addr}"));
            ops_addr = Some(addr);
        }
        args.extend(options.agent_args.iter().cloned());
        let agent_program = bin_dir.join("gatehouse-agent");
        let mut agent = ChildProcess::spawn(
            "gatehouse-agent",
            &agent_program,
            &args,
            format!("https://{agent_addr}"),
            dir.join("agent.log"),
            options.agent_env.clone(),
        )?;

        let client = https_client(&ca.cert_pem())?;
        wait_ready(&mut collector, &client, "/healthz", |code| code == 200).await?;
        // The agent has no unauthenticated endpoint: a 401 Status proves TLS and HTTP work.
        wait_ready(&mut agent, &client, "/version", |code| code == 401).await?;
        // --- policy ---
        // An agent following the collector answers 503 until its first fetch: wait for
        // it (the agent writes its cache once a policy is active).
        if matches!(options.policy, StackPolicy::Collector(_)) {
            let cache = dir.join("policy-cache.yaml");
            let deadline = Instant::now() + READY_TIMEOUT;
            while !cache.exists() {
                agent.check_running()?;
                if Instant::now() > deadline {
                    bail!(
                        "the agent loaded no policy from the collector within {READY_TIMEOUT:?}; log:\n{}",
                        agent.log_tail()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(Stack {
            emulator,
            issuer,
            collector,
            agent,
            ops_addr,
            ingest_addr,
            audit_store: options.audit_store.clone(),
            dir,
            ca_path,
            agent_program,
            agent_args: args,
            collector_program,
            collector_args,
            ready_client: client,
        })
    }

    // --- policy ---
    /// Stops the collector (SIGTERM, then SIGKILL), keeping its handle for
    /// [`Stack::restart_collector`].
    pub async fn stop_collector(&mut self) {
        self.collector.terminate().await;
    }

    /// Starts the collector again with the same arguments; returns once it answers.
    pub async fn restart_collector(&mut self) -> anyhow::Result<()> {
        self.collector.terminate().await;
        let (program, args) = (self.collector_program.clone(), self.collector_args.clone());
        self.collector.respawn(&program, &args)?;
        wait_ready(
            &mut self.collector,
            &self.ready_client,
            "/healthz",
            |code| code == 200,
        )
        .await
    }

    /// Stops the agent (SIGTERM: it drains and makes its spool durable; SIGKILL after
    /// [`STOP_GRACE`]) and starts it again with the same arguments and port, as a
    /// DaemonSet rollout does. Returns once the new agent answers.
    pub async fn restart_agent(&mut self) -> anyhow::Result<()> {
        self.agent.terminate().await;
        let (program, args) = (self.agent_program.clone(), self.agent_args.clone());
        self.agent.respawn(&program, &args)?;
        wait_ready(&mut self.agent, &self.ready_client, "/version", |code| {
            code == 401
        })
        .await
    }

    /// `https://127.0.0.1:PORT` of the agent.
    pub fn agent_url(&self) -> &str {
        &self.agent.url
    }

    /// `http://127.0.0.1:PORT` of the collector.
    pub fn collector_url(&self) -> &str {
        &self.collector.url
    }

    /// The dev CA (signs the agent's and the issuer's certificates).
    pub fn ca_cert_path(&self) -> &Path {
        &self.ca_path
    }

    /// The stack's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A kubeconfig context for `user` through the agent, with a fresh 12-hour token.
    pub fn context_for(&self, user: &str) -> anyhow::Result<Context> {
        let token = self
            .issuer
            .mint_dev(user)
            .with_context(|| format!("{user} is not a dev user of this stack"))??;
        Ok(self.context_with_token(user, token))
    }

    /// A kubeconfig context through the agent with an arbitrary bearer token.
    pub fn context_with_token(&self, name: &str, token: String) -> Context {
        Context {
            name: name.into(),
            server: self.agent.url.clone(),
            ca_file: self.ca_path.clone(),
            credential: Credential::Token(token),
            namespace: None,
        }
    }

    /// The `emulator-admin` context, straight to the emulator (no agent).
    pub fn emulator_admin_context(&self) -> Context {
        Context {
            name: "emulator-admin".into(),
            server: self.emulator.url(),
            ca_file: self.emulator.ca_cert_path(),
            credential: Credential::Token(self.emulator.admin_token()),
            namespace: None,
        }
    }

    /// Writes `<dir>/kubeconfig-<user>` with one context for `user` and returns its path.
    pub fn kubeconfig_for(&self, user: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(format!("kubeconfig-{user}"));
        kubeconfig::write(&path, &[self.context_for(user)?])?;
        Ok(path)
    }

    /// Writes `<dir>/kubeconfig-<name>` with one context using `token`.
    pub fn kubeconfig_with_token(&self, name: &str, token: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(format!("kubeconfig-{name}"));
        kubeconfig::write(&path, &[self.context_with_token(name, token.into())])?;
        Ok(path)
    }

    /// Stops the agent and the collector (SIGTERM, then SIGKILL), then the issuer and
    /// the emulator (which kills its pod processes and removes their cgroups).
    pub async fn shutdown(self) {
        self.agent.stop().await;
        self.collector.stop().await;
        self.issuer.shutdown().await;
        self.emulator.shutdown().await;
    }
}

type HttpsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<Bytes>,
>;

fn https_client(ca_pem: &str) -> anyhow::Result<HttpsClient> {
    let tls = crate::pki::client_config_trusting(ca_pem)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

async fn wait_ready(
    child: &mut ChildProcess,
    client: &HttpsClient,
    path: &str,
    ok: impl Fn(u16) -> bool,
) -> anyhow::Result<()> {
    let url = format!("{}{path}", child.url);
    let uri: http::Uri = url.parse()?;
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        child.check_running()?;
        match tokio::time::timeout(Duration::from_secs(2), client.get(uri.clone())).await {
            Ok(Ok(resp)) if ok(resp.status().as_u16()) => return Ok(()),
            Ok(Ok(resp)) => last = format!("HTTP {}", resp.status()),
            Ok(Err(err)) => last = err.to_string(),
            Err(_) => last = "timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "{} did not become ready at {url} within {READY_TIMEOUT:?} ({last}); log:\n{}",
        child.name,
        child.log_tail()
    )
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}
