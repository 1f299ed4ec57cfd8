//! `gatehouse-agent` binary: parses arguments, binds the listener and runs the agent.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use gatehouse_agent::{cli::Args, server, shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    telemetry::init(args.log_format, "info");
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line with the whole cause chain: a start-up error is read by an SRE, and
            // anyhow's Debug form would append a backtrace whenever RUST_BACKTRACE is set.
            tracing::error!(error = format!("{err:#}"), "gatehouse agent stopped");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.into_config();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    server::run(listener, config, shutdown::signal())
        .await
        .context("gatehouse agent failed")
}
