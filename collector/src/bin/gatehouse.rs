//! `gatehouse` user CLI.

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Gatehouse command-line tool.
///
/// This version can print its version, check a collector's health, act as kubectl's exec
/// credential plugin from cached tokens (`gatehouse token`) and drop them (`gatehouse
/// logout`). `gatehouse login`, approvals and audit search arrive in later versions.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about, long_about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the version of this CLI.
    Version,
    /// Check that a collector is up (calls its /healthz).
    Status {
        /// Collector base URL (HTTP), e.g. http://127.0.0.1:9080.
        #[arg(long, env = "GATEHOUSE_COLLECTOR_URL")]
        collector: String,
    },
    // --- login / kubectl exec plugin (issue 3, item 7) ---
    /// kubectl exec credential plugin: print an ExecCredential with the cached ID token.
    ///
    /// kubectl runs this (see `users[].user.exec` in the kubeconfig). It answers in the
    /// apiVersion named by KUBERNETES_EXEC_INFO (v1 for kubectl >= 1.22, v1beta1 for
    /// older). Tokens are read from $XDG_CACHE_HOME/gatehouse (else ~/.cache/gatehouse).
    /// When no valid token is cached it exits 1 with a hint to run `gatehouse login`.
    Token(IssuerArgs),
    /// Delete the cached tokens for an issuer and client id.
    Logout(IssuerArgs),
    /// Add a cluster (agent URL + CA), an exec user running `gatehouse token`, and a
    /// context to a kubeconfig, keeping its other entries; switches to that context.
    ///
    /// The merge is done by `kubectl config` (set with --kubectl / GATEHOUSE_KUBECTL).
    Kubeconfig(KubeconfigArgs),
}

#[derive(Debug, clap::Args)]
struct KubeconfigArgs {
    #[command(flatten)]
    issuer: IssuerArgs,
    /// Agent URL, e.g. https://127.0.0.1:8443.
    #[arg(long, env = "GATEHOUSE_AGENT_URL")]
    server: String,
    /// CA bundle (PEM) for the agent's serving certificate; embedded in the kubeconfig.
    #[arg(long)]
    ca_file: std::path::PathBuf,
    /// Kubeconfig to write or merge into (default: $KUBECONFIG's first entry, else ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    /// Name of the cluster, user and context entries.
    #[arg(long, default_value = "gatehouse")]
    context_name: String,
    /// Default namespace of the context.
    #[arg(long)]
    namespace: Option<String>,
    /// exec credential apiVersion: v1 (kubectl >= 1.22) or v1beta1 (older kubectl).
    #[arg(long, default_value = "v1", value_parser = ["v1", "v1beta1"])]
    exec_api_version: String,
    /// kubectl binary used to edit the kubeconfig.
    #[arg(long, env = "GATEHOUSE_KUBECTL", default_value = "kubectl")]
    kubectl: std::path::PathBuf,
}

/// Which issuer + client the tokens belong to.
#[derive(Debug, clap::Args)]
struct IssuerArgs {
    /// OIDC issuer URL (https://...).
    #[arg(long, env = "GATEHOUSE_ISSUER_URL")]
    issuer_url: String,
    /// OAuth client id registered at the issuer.
    #[arg(long, env = "GATEHOUSE_CLIENT_ID", default_value = "gatehouse")]
    client_id: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Version => {
            println!("gatehouse {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Status { collector } => status(&collector).await,
        Command::Token(a) => {
            // kubectl shows the plugin's stderr verbatim: one clean line, no backtrace.
            if let Err(e) = token(&a) {
                eprintln!("{e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Logout(a) => logout(&a),
        Command::Kubeconfig(a) => kubeconfig(&a),
    }
}

/// Tokens closer than this to expiry are not handed to kubectl (clock skew, request time).
const EXPIRY_SKEW_SECS: i64 = 30;

fn token(a: &IssuerArgs) -> anyhow::Result<()> {
    use gatehouse_collector::cli::{cache, exec_credential};
    use std::io::IsTerminal;
    let info = exec_credential::parse_exec_info(
        std::env::var("KUBERNETES_EXEC_INFO").ok().as_deref(),
        exec_credential::V1BETA1,
        std::io::stdin().is_terminal(),
    )?;
    let cache = cache::TokenCache::new(cache::default_dir()?);
    let hint = format!(
        "run `gatehouse login --issuer-url {} --client-id {}`",
        a.issuer_url, a.client_id
    );
    let Some(t) = cache.load(&a.issuer_url, &a.client_id)? else {
        bail!("gatehouse: not logged in to {}: {hint}", a.issuer_url);
    };
    if !t.id_token_valid(
        chrono::Utc::now(),
        chrono::Duration::seconds(EXPIRY_SKEW_SECS),
    ) {
        // Refresh and interactive login are not implemented in this version.
        bail!(
            "gatehouse: the login to {} has expired: {hint}",
            a.issuer_url
        );
    }
    println!(
        "{}",
        exec_credential::render(info.api_version, &t.id_token, t.expires_at)
    );
    Ok(())
}

fn kubeconfig(a: &KubeconfigArgs) -> anyhow::Result<()> {
    use gatehouse_collector::cli::kubeconfig::{KubeconfigEntry, kubectl_commands};
    let ca_file = std::fs::canonicalize(&a.ca_file)
        .with_context(|| format!("--ca-file {}", a.ca_file.display()))?;
    let gatehouse_bin = std::env::current_exe().context("cannot find this binary's path")?;
    let entry = KubeconfigEntry {
        server: a.server.clone(),
        ca_file,
        issuer_url: a.issuer.issuer_url.clone(),
        client_id: a.issuer.client_id.clone(),
        context_name: a.context_name.clone(),
        namespace: a.namespace.clone(),
        exec_api_version: format!("client.authentication.k8s.io/{}", a.exec_api_version),
        gatehouse_bin,
    };
    for args in kubectl_commands(&entry) {
        let mut cmd = std::process::Command::new(&a.kubectl);
        if let Some(k) = &a.kubeconfig {
            cmd.arg("--kubeconfig").arg(k);
        }
        let out = cmd
            .args(&args)
            .output()
            .with_context(|| format!("cannot run {}", a.kubectl.display()))?;
        if !out.status.success() {
            bail!(
                "{} {}: {}",
                a.kubectl.display(),
                args.get(1).map(|s| s.to_string_lossy()).unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    eprintln!("kubeconfig: context {} -> {}", a.context_name, a.server);
    Ok(())
}

fn logout(a: &IssuerArgs) -> anyhow::Result<()> {
    use gatehouse_collector::cli::cache;
    let cache = cache::TokenCache::new(cache::default_dir()?);
    if cache.remove(&a.issuer_url, &a.client_id)? {
        eprintln!("logged out of {} (client {})", a.issuer_url, a.client_id);
    } else {
        eprintln!(
            "no cached login for {} (client {})",
            a.issuer_url, a.client_id
        );
    }
    Ok(())
}

async fn status(collector: &str) -> anyhow::Result<()> {
    let url = format!("{}/healthz", collector.trim_end_matches('/'));
    let uri: http::Uri = url.parse().with_context(|| format!("invalid URL {url}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("only http:// collector URLs are supported in this version (got {collector})");
    }
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .with_context(|| format!("{url}: timed out after 5s"))?
        .with_context(|| format!("{url}: cannot connect"))?;
    let code = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    let body = String::from_utf8_lossy(&body);
    if !code.is_success() {
        bail!(
            "collector at {collector} is unhealthy: HTTP {code}: {}",
            body.trim()
        );
    }
    println!("collector {collector}: healthy ({})", body.trim());
    Ok(())
}
