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
/// This version can print its version and check a collector's health. Logging in
/// (`gatehouse login`), approvals and audit search arrive in later versions.
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Version => {
            println!("gatehouse {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Status { collector } => status(&collector).await,
    }
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
