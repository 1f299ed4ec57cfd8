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
//! Ctrl-C or SIGTERM stops everything, removes `ready` and exits 0.

use anyhow::{Context, bail};
use clap::Parser;
use gatehouse_tests::harness::kubeconfig;
use gatehouse_tests::harness::stack::{Stack, StackOptions};
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

    /// Point the agent at a real cluster from this kubeconfig instead of the emulator
    /// (not supported yet).
    #[arg(long)]
    upstream_kubeconfig: Option<PathBuf>,

    /// Context of --upstream-kubeconfig to use.
    #[arg(long, requires = "upstream_kubeconfig")]
    context: Option<String>,
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
    if let Some(path) = &args.upstream_kubeconfig {
        bail!(
            "--upstream-kubeconfig {} is not supported yet: this version of dev-stack only runs \
             against the built-in Kubernetes API emulator",
            path.display()
        );
    }
    let out_dir = args.out_dir.unwrap_or_else(default_out_dir);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let ready = out_dir.join("ready");
    let _ = std::fs::remove_file(&ready);

    let mut options = StackOptions::new(&out_dir);
    options.cgroup_root = cgroup_root();
    let stack = Stack::start(options).await?;

    let kubeconfig_path = out_dir.join("kubeconfig");
    let mut contexts = Vec::new();
    for user in ["alice", "bob", "carol"] {
        contexts.push(stack.context_for(user)?);
    }
    contexts.push(stack.emulator_admin_context());
    kubeconfig::write(&kubeconfig_path, &contexts)?;
    std::fs::write(out_dir.join("env"), env_file(&stack, &kubeconfig_path))?;
    std::fs::write(&ready, "ready\n")?;
    print_banner(&stack, &kubeconfig_path, &out_dir);

    gatehouse_tests::harness::shutdown_signal().await;
    eprintln!("dev-stack: stopping…");
    let _ = std::fs::remove_file(&ready);
    stack.shutdown().await;
    eprintln!("dev-stack: stopped");
    Ok(())
}

fn env_file(stack: &Stack, kubeconfig: &Path) -> String {
    let issuer = stack.issuer.issuer_url();
    let ca = stack.ca_cert_path().display();
    format!(
        "# Gatehouse dev stack — source this file: . target/dev/env\n\
         export GATEHOUSE_AGENT_URL={agent}\n\
         export GATEHOUSE_COLLECTOR_URL={collector}\n\
         export GATEHOUSE_AGENT_OPS_URL={ops}\n\
         export KUBE_EMULATOR_URL={emulator}\n\
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
        emulator = stack.emulator.url(),
        kubeconfig = kubeconfig.display(),
    )
}

fn print_banner(stack: &Stack, kubeconfig: &Path, out_dir: &Path) {
    println!(
        "\nGatehouse dev stack is up.\n\n\
         \x20 agent       {agent}   (log: {dir}/agent.log)\n\
         \x20 collector   {collector}   (log: {dir}/collector.log)\n\
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
        emulator = stack.emulator.url(),
        issuer = stack.issuer.issuer_url(),
        kubeconfig = kubeconfig.display(),
        dir = out_dir.display(),
    );
}
