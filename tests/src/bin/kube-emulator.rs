//! `kube-emulator`: runs the Kubernetes API emulator until SIGINT/SIGTERM.

use clap::{Parser, ValueEnum};
use gatehouse_tests::emulator::{Emulator, EmulatorConfig, RuntimeConfig, Seed};
use std::net::SocketAddr;
use std::path::PathBuf;

/// A test-only Kubernetes API server that kubectl 1.20–1.32 can talk to.
///
/// Writes DIR/ca.crt, DIR/admin-token, DIR/agent-token, DIR/url and an admin
/// DIR/kubeconfig, then serves until interrupted.
#[derive(Debug, Parser)]
#[command(name = "kube-emulator", version, about, long_about = None)]
struct Args {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Directory for the CA certificate, tokens, URL and kubeconfig.
    #[arg(long)]
    dir: PathBuf,
    /// Initial cluster contents.
    #[arg(long, value_enum, default_value_t = SeedArg::Empty)]
    seed: SeedArg,
    /// cgroup v2 directory to create pod cgroups under (none if unset).
    #[arg(long)]
    cgroup_root: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SeedArg {
    /// System namespaces and default RBAC only.
    Empty,
    /// Plus dev/prod namespaces, running pods, deployments, a secret and team RBAC.
    Dev,
}

fn kubeconfig(url: &str, ca: &std::path::Path, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: {url}\n    certificate-authority: {}\nusers:\n- name: emulator-admin\n  user:\n    token: {token}\ncontexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: emulator-admin\n    namespace: default\ncurrent-context: emulator\n",
        ca.display()
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let dir = std::path::absolute(&args.dir)?;
    let config = EmulatorConfig {
        dir: dir.clone(),
        listen: args.listen,
        seed: match args.seed {
            SeedArg::Empty => Seed::Empty,
            SeedArg::Dev => Seed::Dev,
        },
        runtime: RuntimeConfig {
            cgroup_root: args.cgroup_root,
            work_dir: dir.join("runtime"),
        },
    };
    let emulator = Emulator::start(config).await?;
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        kubeconfig(
            &emulator.url(),
            &emulator.ca_cert_path(),
            &emulator.admin_token(),
        ),
    )?;
    tracing::info!(kubeconfig = %path.display(), url = %emulator.url(), "ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    emulator.shutdown().await;
    Ok(())
}
