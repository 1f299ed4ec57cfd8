//! `gatehouse-collector` binary: parses arguments, binds, and runs the collector.

use anyhow::Context;
use clap::Parser;
use gatehouse_collector::config::CollectorConfig;
use gatehouse_collector::telemetry::{self, LogFormat};
use gatehouse_collector::{server, shutdown};
use std::net::SocketAddr;

/// Gatehouse collector: the central service Gatehouse agents report to.
///
/// This version serves health checks (/healthz, /readyz) and Prometheus metrics
/// (/metrics) over plain HTTP; keep it on loopback or behind a TLS-terminating proxy.
/// Event ingest, approvals, policy distribution, the ClickHouse audit store and the audit
/// query API arrive in later versions.
#[derive(Debug, Parser)]
#[command(name = "gatehouse-collector", version, about, long_about)]
struct Args {
    /// Address to listen on (HTTP).
    #[arg(
        long,
        env = "GATEHOUSE_COLLECTOR_LISTEN",
        default_value = "127.0.0.1:9080"
    )]
    listen: SocketAddr,

    /// Seconds in-flight requests may finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 10)]
    drain_timeout_secs: u64,

    /// Log format.
    #[arg(long, value_enum, env = "GATEHOUSE_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format, "info");
    let config = CollectorConfig {
        listen: args.listen,
        drain_timeout: std::time::Duration::from_secs(args.drain_timeout_secs),
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let registry = prometheus_client::registry::Registry::default();
    server::run(listener, config, registry, shutdown::signal())
        .await
        .context("collector failed")
}
