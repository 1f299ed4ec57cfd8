//! `dev-stack` binary: the local stack behind `cargo xtask dev`.
//!
//! Starts the Kubernetes API emulator (seeded with a demo cluster) and an OIDC issuer
//! in-process, the real `gatehouse-collector` and `gatehouse-agent` binaries (from
//! `GATEHOUSE_BIN_DIR`), then writes into the output directory (default
//! `<workspace>/target/dev`):
//! - `pki/ca.crt` — the dev CA (agent and issuer certificates);
//! - `kubeconfig` — contexts `alice`, `bob`, `carol` (through the agent, 12-hour tokens)
//!   and `emulator-admin` (straight to the emulator);
//! - `env` — shell-sourceable URLs and `KUBECONFIG`;
//! - `ready` — last, once everything answers.
//!
//! With `--upstream-kubeconfig PATH [--context C]` the agent forwards to that cluster,
//! with the credential of that context, instead of the emulator (which still runs, unused,
//! and gets no `emulator-admin` context). The credential needs the impersonation RBAC of
//! `deploy/agent-impersonation-rbac.yaml`; the dev users' groups get what the cluster's
//! own RBAC grants them.
//!
//! The agent spools its audit events and ships them (mTLS) to the collector's ingest
//! listener. `--clickhouse auto|on|off` picks the collector's store: a throwaway
//! ClickHouse server (its data is gone when the stack stops) or the embedded SQLite store
//! in `<out-dir>/audit/audit.sqlite3` (kept across runs). `auto` (default) uses ClickHouse
//! when `clickhouse-server` is installed.
//!
//! Ctrl-C or SIGTERM stops everything, removes `ready` and exits 0.

use anyhow::Context;
use clap::Parser;
use gatehouse_tests::clickhouse::ClickHouse;
use gatehouse_tests::harness::kubeconfig;
use gatehouse_tests::harness::stack::{
    AuditStore, Stack, StackOptions, StackPolicy, default_policy,
};
use gatehouse_tests::oidc::DEV_PASSWORD;
use std::path::{Path, PathBuf};

/// Run the Gatehouse dev stack: emulator + OIDC issuer + collector + agent on loopback.
#[derive(Debug, Parser)]
#[command(name = "dev-stack", about, long_about)]
struct Args {
    /// Where the PKI, kubeconfig, env file, logs and `ready` marker go
    /// (default: <workspace>/target/dev).
    #[arg(long)]
    out_dir: Option<PathBuf>,

    /// Put a real cluster behind the local stack: the agent forwards to the cluster of
    /// this kubeconfig, authenticating with that context's user (token, tokenFile, client
    /// certificate or exec plugin such as `aws eks get-token`). That user needs the RBAC
    /// in deploy/agent-impersonation-rbac.yaml.
    #[arg(long, value_name = "PATH")]
    upstream_kubeconfig: Option<PathBuf>,

    /// Context of --upstream-kubeconfig to use (default: its current-context).
    #[arg(long, value_name = "NAME", requires = "upstream_kubeconfig")]
    context: Option<String>,

    /// The collector's audit store: `on` = a throwaway ClickHouse server (needs
    /// clickhouse-server, see `cargo xtask setup`), `off` = the embedded SQLite store in
    /// <out-dir>/audit, `auto` = ClickHouse when clickhouse-server is installed.
    #[arg(long, value_enum, default_value_t = ClickHouseMode::Auto)]
    clickhouse: ClickHouseMode,

    /// Run the emulator's pod processes without cgroups, even as root (lets a second
    /// dev stack, e.g. a test's, run beside one that uses them).
    #[arg(long)]
    no_cgroups: bool,
}

/// `--clickhouse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ClickHouseMode {
    /// ClickHouse when clickhouse-server is installed, else the embedded store.
    Auto,
    /// ClickHouse (fails when clickhouse-server is missing).
    On,
    /// The embedded SQLite store.
    Off,
}

/// The store for `mode`, and the ClickHouse server to keep running for it.
fn audit_store(
    mode: ClickHouseMode,
    out_dir: &Path,
) -> anyhow::Result<(AuditStore, Option<ClickHouse>)> {
    let installed = Path::new(gatehouse_tests::clickhouse::SERVER_BIN).exists();
    let use_clickhouse = match mode {
        ClickHouseMode::Off => false,
        ClickHouseMode::Auto => installed,
        ClickHouseMode::On if installed => true,
        ClickHouseMode::On => anyhow::bail!(
            "--clickhouse on: {} is not installed (run `cargo xtask setup`, or use \
             --clickhouse off for the embedded store)",
            gatehouse_tests::clickhouse::SERVER_BIN
        ),
    };
    if !use_clickhouse {
        let dir = out_dir.join("audit");
        return Ok((AuditStore::Embedded { dir }, None));
    }
    let ch = ClickHouse::launch()
        .context("starting ClickHouse")?
        .ok_or_else(|| anyhow::anyhow!("clickhouse-server is not installed"))?;
    Ok((AuditStore::ClickHouse { url: ch.url() }, Some(ch)))
}

fn default_out_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("target/dev")
}

/// `/sys/fs/cgroup/unified/gatehouse-dev` when running as root on cgroup v2, else none.
fn cgroup_root() -> Option<PathBuf> {
    let unified = Path::new("/sys/fs/cgroup/unified");
    use std::os::unix::fs::MetadataExt;
    // /proc/self is owned by the process's effective uid.
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    (root && unified.join("cgroup.procs").exists()).then(|| unified.join("gatehouse-dev"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    // The agent runs in the output directory's context: give it an absolute path.
    let upstream = match &args.upstream_kubeconfig {
        Some(path) => Some(std::fs::canonicalize(path).with_context(|| {
            format!("--upstream-kubeconfig {}: cannot read it", path.display())
        })?),
        None => None,
    };
    let out_dir = args.out_dir.unwrap_or_else(default_out_dir);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let ready = out_dir.join("ready");
    let _ = std::fs::remove_file(&ready);

    let (store, clickhouse) = audit_store(args.clickhouse, &out_dir)?;
    eprintln!("dev-stack: audit store: {store}");
    let mut options = StackOptions::new(&out_dir);
    options.audit_store = Some(store);
    // The shipped default policy, held by the collector and followed by the agent, as in
    // a real deployment.
    options.policy = StackPolicy::Collector(default_policy());
    options.cgroup_root = if args.no_cgroups { None } else { cgroup_root() };
    options.upstream_kubeconfig = upstream.clone();
    options.upstream_context = args.context.clone();
    let stack = Stack::start(options).await?;
    let upstream = upstream.map(|path| Upstream {
        path,
        context: args.context,
    });

    let kubeconfig_path = out_dir.join("kubeconfig");
    let mut contexts = Vec::new();
    for user in ["alice", "bob", "carol"] {
        contexts.push(stack.context_for(user)?);
    }
    // Straight to the emulator only when the agent is in front of it.
    if upstream.is_none() {
        contexts.push(stack.emulator_admin_context());
    }
    kubeconfig::write(&kubeconfig_path, &contexts)?;
    std::fs::write(
        out_dir.join("env"),
        env_file(&stack, &kubeconfig_path, upstream.as_ref()),
    )?;
    std::fs::write(&ready, "ready\n")?;
    match &upstream {
        None => print_banner(&stack, &kubeconfig_path, &out_dir),
        Some(upstream) => print_upstream_banner(&stack, &kubeconfig_path, &out_dir, upstream),
    }

    gatehouse_tests::harness::shutdown_signal().await;
    eprintln!("dev-stack: stopping…");
    let _ = std::fs::remove_file(&ready);
    stack.shutdown().await;
    // After the collector: ClickHouse stops (and its throwaway data goes) last.
    drop(clickhouse);
    eprintln!("dev-stack: stopped");
    Ok(())
}

/// The real cluster behind the agent (`--upstream-kubeconfig`).
struct Upstream {
    path: PathBuf,
    context: Option<String>,
}

impl Upstream {
    fn describe(&self) -> String {
        match &self.context {
            Some(context) => format!("{} (context {context})", self.path.display()),
            None => format!("{} (its current-context)", self.path.display()),
        }
    }
}

fn env_file(stack: &Stack, kubeconfig: &Path, upstream: Option<&Upstream>) -> String {
    let issuer = stack.issuer.issuer_url();
    let ca = stack.ca_cert_path().display();
    // The upstream line replaces the emulator's when a real cluster is behind the agent.
    let upstream_line = match upstream {
        None => format!("export KUBE_EMULATOR_URL={}", stack.emulator.url()),
        Some(u) => format!("export GATEHOUSE_UPSTREAM_KUBECONFIG={}", u.path.display()),
    };
    format!(
        "# Gatehouse dev stack — source this file: . target/dev/env\n\
         export GATEHOUSE_AGENT_URL={agent}\n\
         export GATEHOUSE_COLLECTOR_URL={collector}\n\
         export GATEHOUSE_AGENT_OPS_URL={ops}\n\
         {upstream_line}\n\
         export GATEHOUSE_OIDC_ISSUER_URL={issuer}\n\
         export GATEHOUSE_DEV_CA={ca}\n\
         export KUBECONFIG={kubeconfig}\n\
         # A fresh 12-hour ID token for alice (also bob, carol):\n\
         #   curl -s --cacert {ca} '{issuer}/dev/token?user=alice'\n\
         # or the OAuth2 password grant (every dev user's password is {DEV_PASSWORD}):\n\
         #   curl -s --cacert {ca} -d grant_type=password -d username=alice -d password={DEV_PASSWORD} {issuer}/token\n",
        agent = stack.agent_url(),
        collector = stack.collector_url(),
        ops = stack
            .ops_addr
            .map(|addr| format!("http://{addr}"))
            .unwrap_or_default(),
        kubeconfig = kubeconfig.display(),
    )
}

/// The banner's audit store line (with how to look at the embedded one).
fn store_line(stack: &Stack) -> String {
    match &stack.audit_store {
        None => "none".into(),
        // The collector's file name inside --store-dir.
        Some(AuditStore::Embedded { dir }) => {
            format!("embedded SQLite (sqlite3 {}/audit.sqlite3)", dir.display())
        }
        Some(store) => store.to_string(),
    }
}

fn print_upstream_banner(stack: &Stack, kubeconfig: &Path, out_dir: &Path, upstream: &Upstream) {
    println!(
        "\nGatehouse dev stack is up, in front of a real cluster.\n\n\
         \x20 agent       {agent}   (log: {dir}/agent.log)\n\
         \x20 collector   {collector}   (log: {dir}/collector.log)\n\
         \x20 audit store {store}\n\
         \x20 upstream    {upstream}\n\
         \x20 OIDC issuer {issuer}\n\n\
         The agent forwards as that context's user, impersonating alice (group engineers),\n\
         bob (sre-leads) and carol (security); the cluster's RBAC decides what they may do.\n\
         The agent's user needs deploy/agent-impersonation-rbac.yaml (see deploy/README.md).\n\n\
         \x20 export KUBECONFIG={kubeconfig}\n\
         \x20 kubectl --context alice auth whoami\n\
         \x20 kubectl --context bob get pods -A\n\n\
         \x20 URLs and token commands: . {dir}/env\n\
         Ctrl-C stops everything.",
        agent = stack.agent_url(),
        collector = stack.collector_url(),
        store = store_line(stack),
        upstream = upstream.describe(),
        issuer = stack.issuer.issuer_url(),
        kubeconfig = kubeconfig.display(),
        dir = out_dir.display(),
    );
}

fn print_banner(stack: &Stack, kubeconfig: &Path, out_dir: &Path) {
    println!(
        "\nGatehouse dev stack is up.\n\n\
         \x20 agent       {agent}   (log: {dir}/agent.log)\n\
         \x20 collector   {collector}   (log: {dir}/collector.log)\n\
         \x20 audit store {store}\n\
         \x20 emulator    {emulator}\n\
         \x20 OIDC issuer {issuer}\n\n\
         \x20 export KUBECONFIG={kubeconfig}\n\
         \x20 kubectl --context alice get pods -n dev        # engineers: edit dev, view prod\n\
         \x20 kubectl --context alice exec -n dev web-7d9f8b6c4-x2k9p -- id\n\
         \x20 kubectl --context bob get secrets -A           # sre-leads: cluster-admin\n\
         \x20 kubectl --context carol get pods -A            # security: view\n\
         \x20 kubectl --context emulator-admin get pods -A   # straight to the emulator\n\n\
         \x20 URLs and token commands: . {dir}/env\n\
         Ctrl-C stops everything.",
        agent = stack.agent_url(),
        collector = stack.collector_url(),
        store = store_line(stack),
        emulator = stack.emulator.url(),
        issuer = stack.issuer.issuer_url(),
        kubeconfig = kubeconfig.display(),
        dir = out_dir.display(),
    );
}
