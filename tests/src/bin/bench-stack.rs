//! `bench-stack` binary: the processes and credentials behind `cargo xtask bench proxy`.
//!
//! `bench-stack stack --bin-dir DIR --out-dir DIR` starts the emulator, the OIDC issuer,
//! the collector and the agent (from `--bin-dir`, the release build), then writes
//! `<out>/bench.json` (URLs, CA files, the agent's pid, an emulator bearer token and an
//! OIDC ID token) and runs until SIGTERM/SIGINT.
//!
//! `bench-stack watches --url URL --ca FILE --token T --count N` opens N HTTP watch
//! streams (`?watch=1`) on separate connections, prints `open N` once all answered with
//! headers, and holds them until SIGTERM/SIGINT.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use gatehouse_tests::harness::stack::{Stack, StackOptions};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::PathBuf;
use std::time::Duration;

/// Bench helper: start the stack for `cargo xtask bench proxy`, or hold watch streams.
#[derive(Debug, Parser)]
#[command(name = "bench-stack", about, long_about)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start emulator + issuer + collector + agent and write `<out-dir>/bench.json`.
    Stack {
        /// Directory holding the `gatehouse-agent` and `gatehouse-collector` to measure.
        #[arg(long)]
        bin_dir: PathBuf,
        /// Where PKI, logs and bench.json go.
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Open `--count` watch streams and hold them until SIGTERM/SIGINT.
    Watches {
        /// Base URL (the agent's).
        #[arg(long)]
        url: String,
        /// CA file to trust for `--url`.
        #[arg(long)]
        ca: PathBuf,
        /// Bearer token for every stream.
        #[arg(long)]
        token: String,
        /// How many streams.
        #[arg(long, default_value_t = 500)]
        count: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match Args::parse().command {
        Cmd::Stack { bin_dir, out_dir } => stack(bin_dir, out_dir).await,
        Cmd::Watches {
            url,
            ca,
            token,
            count,
        } => watches(&url, &ca, &token, count).await,
    }
}

async fn stack(bin_dir: PathBuf, out_dir: PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let info_path = out_dir.join("bench.json");
    let _ = std::fs::remove_file(&info_path);
    let mut options = StackOptions::new(&out_dir);
    options.bin_dir = Some(bin_dir);
    let stack = Stack::start(options).await?;
    let id_token = stack
        .issuer
        .mint_dev("alice")
        .context("alice is not a dev user")??;
    let info = serde_json::json!({
        "agent_url": stack.agent_url(),
        "agent_pid": stack.agent.pid(),
        "agent_ca": stack.ca_cert_path(),
        "emulator_url": stack.emulator.url(),
        "emulator_ca": stack.emulator.ca_cert_path(),
        "emulator_token": stack.emulator.admin_token(),
        "id_token": id_token,
    });
    // Written whole under a temporary name so a reader never sees half a file.
    let tmp = out_dir.join("bench.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&info)?)?;
    std::fs::rename(&tmp, &info_path)?;
    gatehouse_tests::harness::shutdown_signal().await;
    let _ = std::fs::remove_file(&info_path);
    stack.shutdown().await;
    Ok(())
}

async fn watches(url: &str, ca: &PathBuf, token: &str, count: usize) -> anyhow::Result<()> {
    let ca_pem =
        std::fs::read_to_string(ca).with_context(|| format!("reading {}", ca.display()))?;
    let tls = gatehouse_tests::pki::client_config_trusting(&ca_pem)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector);
    let uri: http::Uri = format!("{url}/api/v1/namespaces/dev/pods?watch=1").parse()?;
    let mut opened = tokio::task::JoinSet::new();
    for _ in 0..count {
        let client = client.clone();
        let request = http::Request::get(uri.clone())
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Empty::new())?;
        opened.spawn(async move {
            let response =
                tokio::time::timeout(Duration::from_secs(30), client.request(request)).await??;
            if !response.status().is_success() {
                bail!("watch answered HTTP {}", response.status());
            }
            anyhow::Ok(response.into_body())
        });
    }
    let mut bodies = Vec::with_capacity(count);
    let mut failures = Vec::new();
    while let Some(joined) = opened.join_next().await {
        match joined? {
            Ok(body) => bodies.push(body),
            Err(error) => failures.push(error.to_string()),
        }
    }
    // Report how many opened rather than giving up: the memory figure is still useful.
    failures.sort();
    failures.dedup();
    println!("open {} of {count}; errors: {failures:?}", bodies.len());
    // Drain every stream so the agent never blocks on a full socket while we hold them.
    let mut drains = tokio::task::JoinSet::new();
    for mut body in bodies {
        drains.spawn(async move { while let Some(Ok(_)) = body.frame().await {} });
    }
    gatehouse_tests::harness::shutdown_signal().await;
    drains.abort_all();
    Ok(())
}
