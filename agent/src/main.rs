//! `gatehouse-agent` binary: parses arguments, binds the listener and runs the agent.

use anyhow::Context;
use clap::Parser;
use gatehouse_agent::{cli::Args, server, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format, "info");
    let config = args.into_config();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    server::run(listener, config, shutdown::signal())
        .await
        .context("gatehouse agent failed")?;
    Ok(())
}
