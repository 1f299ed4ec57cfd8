//! `cargo xtask`: setup, eBPF build, lint, the full test run and the local dev stack.
//!
//! # Layout
//! - [`setup`]: installs every tool the build and the tests need (idempotent).
//! - [`ebpf`]: builds `agent-ebpf` for `bpfel-unknown-none` and leaves the object where
//!   `agent/build.rs` embeds it from.
//! - [`lint`]: `cargo fmt --check` and `cargo clippy -D warnings`.
//! - [`test`]: lint, setup, eBPF build, then one `cargo nextest` run (kernel tests included
//!   when this machine can run them).
//! - [`dev`]: builds everything and runs the `dev-stack` binary.
//! - [`util`]: paths every task agrees on, and running commands visibly.
//! - [`bench`]: `bench proxy`, latency/CPU/memory of the agent vs direct vs nginx.
//! - [`bench_spool`]: `bench spool`, the audit spool's cost on the request path.
//! - [`bench_ingest`]: `bench ingest`, spool-to-ClickHouse throughput and the user query.
//! - [`bench_mask`]: `bench mask`, the masking engine's cost (5,000-secret list, text MB/s).
//! - [`bench_policy`]: `bench policy`, policy evaluation cost with 1,000 rules.
//! - [`bench_exec`]: `bench exec`, exec output through the recording agent vs direct.

mod bench;
mod bench_exec;
mod bench_ingest;
mod bench_mask;
mod bench_policy;
mod bench_spool;
mod dev;
mod ebpf;
mod lint;
mod setup;
mod test;
mod util;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// Gatehouse project tasks.
///
/// Typical use on a fresh machine (as root): `cargo xtask test` installs what is missing,
/// builds the eBPF object and runs every test. Paths: tools go to GATEHOUSE_TOOLS_DIR
/// (default ~/.cache/gatehouse/tools); build output to CARGO_TARGET_DIR (default
/// ./target), the eBPF object to <target>/ebpf/gatehouse-ebpf.o.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
struct Cli {
    /// Where setup installs tools (kubectl 1.20, the moto venv).
    #[arg(long, global = true, env = "GATEHOUSE_TOOLS_DIR", value_name = "DIR")]
    tools_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install everything the build and tests need; skips what is present.
    ///
    /// Debian packages (Debian's rustc + std sources for the eBPF build, LLVM 22,
    /// ClickHouse 18.16, bpftool), kubectl 1.20 unpacked into the tools dir (never over
    /// /usr/bin/kubectl), bpf-linker 0.13.0, cargo-nextest, moto's STS server in a venv, and
    /// tracefs at /sys/kernel/tracing. Steps that need root are named when run without it.
    Setup,
    /// Build the eBPF programs (agent-ebpf) and copy the object for the agent to embed.
    ///
    /// Output: <target>/ebpf/gatehouse-ebpf.o. Build the agent afterwards (or let
    /// `cargo xtask test`/`dev` do it) to embed it.
    BuildEbpf {
        /// Use the release profile (the verified recipe; what `test` uses).
        #[arg(long)]
        release: bool,
    },
    /// Check formatting (cargo fmt --check) and lints (cargo clippy -D warnings).
    Lint,
    /// Lint, setup, build the eBPF object, then run every test once with cargo nextest.
    ///
    /// Kernel tests (ignored by default) are included when this machine can run them:
    /// root, BTF, bpf(), tracefs and a writable cgroup v2 at /sys/fs/cgroup/unified.
    /// Otherwise a banner says why they were skipped. Arguments after `--` go to nextest,
    /// e.g. `cargo xtask test -- -E 'test(process_exec)'`.
    Test {
        /// Skip `cargo xtask lint` (for quick iterations; CI never skips it).
        #[arg(long)]
        skip_lint: bool,
        /// Extra arguments for `cargo nextest run` (filters, --no-capture, ...).
        #[arg(last = true, value_name = "NEXTEST_ARGS")]
        nextest_args: Vec<String>,
    },
    /// Setup, build everything, then run the local stack (`dev-stack`) until Ctrl-C.
    ///
    /// `--upstream-kubeconfig PATH [--context C]` puts a real cluster behind the agent
    /// instead of the emulator. `--clickhouse auto|on|off` picks the collector's audit store
    /// (the agent ships its spool to it). Arguments after `--` go to dev-stack as they are.
    /// dev-stack finds the built binaries through GATEHOUSE_BIN_DIR.
    Dev {
        // --- upstream kubeconfig ---
        /// Forward to the cluster of this kubeconfig, authenticating as its context's user
        /// (which needs deploy/agent-impersonation-rbac.yaml), instead of the emulator.
        #[arg(long, value_name = "PATH")]
        upstream_kubeconfig: Option<std::path::PathBuf>,
        /// Context of --upstream-kubeconfig (default: its current-context).
        #[arg(long, value_name = "NAME", requires = "upstream_kubeconfig")]
        context: Option<String>,
        // --- audit store ---
        /// The collector's audit store: `on` = a throwaway ClickHouse server, `off` = the
        /// embedded SQLite store in target/dev/audit, `auto` = ClickHouse when
        /// clickhouse-server is installed, else embedded.
        #[arg(long, value_enum, default_value_t = dev::ClickHouseMode::Auto)]
        clickhouse: dev::ClickHouseMode,
        /// Arguments for dev-stack.
        #[arg(last = true, value_name = "DEV_STACK_ARGS")]
        args: Vec<String>,
    },
    /// Benchmarks (not part of `test`; they report, they never fail the build).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Open-loop latency, CPU and memory of the agent vs the emulator direct vs nginx.
    ///
    /// Builds the release binaries, starts emulator + OIDC issuer + agent (release) and
    /// Debian's nginx (installed with apt if missing) on 127.0.0.1, drives GET
    /// /api/v1/namespaces/dev/pods with oha (installed with cargo into the tools dir if
    /// missing) and prints p50/p99/p99.9, added latency, agent CPU per request, max rate
    /// and peak RSS with 500 watches, with the targets. JSON goes to
    /// <target>/bench/proxy-<unix-seconds>.json. Quick run: `--duration 5`.
    Proxy(bench::ProxyOptions),
    // --- spool bench ---
    /// Latency of the audit spool's `emit` on the request path (p50/p99 over 1M events,
    /// writer running, batched fsync), against the 5 us p99 target. JSON goes to
    /// <target>/bench/spool-<unix-seconds>.json.
    Spool(bench_spool::SpoolOptions),
    // --- ingest bench ---
    /// Events/s from a pre-filled agent spool through the release collector to committed
    /// ClickHouse rows (target 50k/s), against ClickHouse's own bulk insert of the same
    /// rows; p50/p99 of one user's day among 10M rows (target 200 ms); the spool's emit
    /// p99 (target 5 us). Needs clickhouse-server (`cargo xtask setup`). JSON goes to
    /// <target>/bench/ingest-<unix-seconds>.json. Quick run: `--events 100000
    /// --query-rows 1000000`.
    Ingest(bench_ingest::IngestOptions),
    // --- mask bench ---
    /// Masking a 5,000-item SecretList with the default profile vs only parsing and
    /// re-serialising it (same run; target <= 50 ms added), and the streaming text
    /// masker's MB/s over log lines. JSON goes to <target>/bench/mask-<unix-seconds>.json.
    Mask(bench_mask::MaskOptions),
    // --- policy bench ---
    /// Policy evaluation cost per request with 1,000 rules (p50/p99 over 200k samples of
    /// a request mix), against the 5 us p99 target. JSON goes to
    /// <target>/bench/policy-<unix-seconds>.json.
    Policy(bench_policy::PolicyOptions),
    // --- exec bench (session recording) ---
    /// `kubectl exec` of 1 GiB of output through the release agent with recording on vs
    /// straight to the emulator, same run: throughput ratio (target >= 80%) and agent RSS
    /// growth (target <= 16 MiB). JSON goes to <target>/bench/exec-<unix-seconds>.json.
    /// Quick run: `--bytes 268435456 --runs 1`.
    Exec(bench_exec::ExecOptions),
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            // The cause chain, without anyhow's backtrace: the commands run are printed.
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let paths = util::Paths::discover(cli.tools_dir)?;
    match cli.command {
        Command::Setup => setup::run(&paths)?,
        Command::BuildEbpf { release } => {
            let object = ebpf::build(&paths, ebpf::Profile::from_flag(release))?;
            println!("eBPF object: {}", object.display());
        }
        Command::Lint => lint::run(&paths)?,
        Command::Test {
            skip_lint,
            nextest_args,
        } => test::run(&paths, skip_lint, &nextest_args)?,
        Command::Dev {
            upstream_kubeconfig,
            context,
            clickhouse,
            args,
        } => {
            let mut all = dev::upstream_args(upstream_kubeconfig.as_deref(), context.as_deref());
            all.push(clickhouse.arg());
            all.extend(args);
            return dev::run(&paths, &all);
        }
        Command::Bench(BenchCommand::Proxy(options)) => bench::proxy(&paths, &options)?,
        Command::Bench(BenchCommand::Spool(options)) => bench_spool::spool(&paths, &options)?,
        Command::Bench(BenchCommand::Mask(options)) => bench_mask::mask(&paths, &options)?,
        Command::Bench(BenchCommand::Policy(options)) => bench_policy::policy(&paths, &options)?,
        Command::Bench(BenchCommand::Ingest(options)) => {
            bench_ingest::ingest(&paths, &options)?;
        }
        Command::Bench(BenchCommand::Exec(options)) => bench_exec::exec(&paths, &options)?,
    }
    Ok(ExitCode::SUCCESS)
}
