//! `gatehouse-agent` binary: parses arguments, builds the runtime, binds the listener and
//! runs the agent.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use gatehouse_agent::{cli::Args, server, shutdown, telemetry};

fn main() -> ExitCode {
    let args = Args::parse();
    telemetry::init(args.log_format, "info");
    match run(args) {
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

fn run(args: Args) -> anyhow::Result<()> {
    // A fixed, small number of workers (see `--worker-threads`), not one per core.
    let runtime = match args.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(n))
            .enable_all()
            .build(),
    }
    .context("starting the async runtime")?;
    let config = args.into_config();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        server::run(listener, config, shutdown::signal())
            .await
            .context("gatehouse agent failed")
    })
}
