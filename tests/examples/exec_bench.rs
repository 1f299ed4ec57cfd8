//! Exec benchmark driven by `cargo xtask bench exec`: `kubectl exec -- sh -c 'head -c N
//! /dev/zero | tr ...'` read to the end, through the release agent with recording on (its
//! spool taking the asciicast chunks) vs straight to the emulator, in the same run.
//! Reports throughput of both, their ratio (target ≥ 80%), and the agent's RSS growth
//! during the recorded run (target ≤ 16 MiB). Prints a report and one JSON line (last).

use anyhow::Context as _;
use clap::Parser;
use gatehouse_tests::harness::kubeconfig;
use gatehouse_tests::harness::stack::{Stack, StackOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// Measures exec output throughput with and without the recording agent.
#[derive(Parser)]
struct Args {
    /// Directory with the release `gatehouse-agent` and `gatehouse-collector`.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Bytes the container writes to stdout per run.
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    /// Runs of each path (the best is reported; they alternate).
    #[arg(long, default_value_t = 2)]
    runs: usize,
    /// The agent's `--session-recording` (false: the relay's own cost, for comparison).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    recording: bool,
}

const NS: &str = "bench";
const POD: &str = "box";

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One `kubectl exec` reading everything: (bytes read, seconds).
async fn exec_once(kubeconfig: &Path, bytes: u64) -> anyhow::Result<(u64, f64)> {
    let script = format!("head -c {bytes} /dev/zero | tr '\\0' x");
    let started = Instant::now();
    let mut child = tokio::process::Command::new("kubectl")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["exec", POD, "-n", NS, "--", "sh", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting kubectl")?;
    let mut out = child.stdout.take().context("kubectl stdout")?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = out.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let status = child.wait_with_output().await?;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        status.status.success() && total == bytes,
        "kubectl exec read {total} of {bytes} bytes ({}): {}",
        status.status,
        String::from_utf8_lossy(&status.stderr)
    );
    Ok((total, secs))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let mut options = StackOptions::new(dir.path().join("stack"));
    options.bin_dir = Some(args.bin_dir.clone());
    // Recording on (the default) into a spool large enough for the whole run.
    options.agent_args = vec![
        format!("--spool-dir={}", dir.path().join("spool").display()),
        format!(
            "--spool-max-bytes={}",
            (args.bytes * 2).max(64 << 20) * args.runs as u64
        ),
        "--log-format=json".into(),
        format!("--session-recording={}", args.recording),
    ];
    let stack = Stack::start(options).await?;
    let admin = dir.path().join("admin.kubeconfig");
    kubeconfig::write(&admin, &[stack.emulator_admin_context()])?;
    let user = stack.kubeconfig_for("bob")?;
    let kubectl = |cfg: &Path, a: &[&str]| {
        let mut c = std::process::Command::new("kubectl");
        c.arg(format!("--kubeconfig={}", cfg.display())).args(a);
        c
    };
    let _ = kubectl(&admin, &["create", "namespace", NS]).output()?;
    let manifest = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": POD, "namespace": NS},
        "spec": {"containers": [{"name": "main", "image": "busybox",
            "command": ["sh", "-c", "sleep 3600"]}]}
    });
    let path = dir.path().join("pod.json");
    std::fs::write(&path, manifest.to_string())?;
    let out = kubectl(&admin, &["apply", "-f", &path.to_string_lossy()]).output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = kubectl(
            &admin,
            &[
                "get",
                "pod",
                POD,
                "-n",
                NS,
                "-o",
                "jsonpath={.status.phase}",
            ],
        )
        .output()?;
        if out.stdout == b"Running" {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "pod never Running");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pid = stack.agent.pid().context("agent pid")?;
    // Warm-up: connections, TLS session, the first chunk allocations.
    exec_once(&user, 16 << 20).await?;
    exec_once(&admin, 16 << 20).await?;
    let rss_before = rss_kib(pid, "VmRSS:");
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid, "VmRSS:"), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let (mut direct, mut agent) = (0.0f64, 0.0f64);
    for run in 0..args.runs {
        let (n, s) = exec_once(&admin, args.bytes).await?;
        let d = n as f64 / s / 1e6;
        let (n, s) = exec_once(&user, args.bytes).await?;
        let a = n as f64 / s / 1e6;
        println!("run {run}: direct {d:.0} MB/s, agent+recording {a:.0} MB/s");
        direct = direct.max(d);
        agent = agent.max(a);
    }
    sampler.abort();
    let rss_peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    let growth_mib = rss_peak.saturating_sub(rss_before) as f64 / 1024.0;
    let ratio = agent / direct;
    let spool_bytes: u64 = std::fs::read_dir(dir.path().join("spool"))?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "exec output {:.0} MiB x {} runs\n  direct to the emulator : {direct:.0} MB/s\n  \
         agent, recording {:<5} : {agent:.0} MB/s  ({:.0}% of direct; target >= 80%)\n  \
         agent RSS              : {:.1} MiB before, peak {:.1} MiB, growth {growth_mib:.1} MiB (target <= 16 MiB)\n  \
         spool after the runs   : {:.0} MiB",
        args.bytes as f64 / 1048576.0,
        args.runs,
        if args.recording { "on" } else { "off" },
        ratio * 100.0,
        rss_before as f64 / 1024.0,
        rss_peak as f64 / 1024.0,
        spool_bytes as f64 / 1048576.0,
    );
    println!(
        "{}",
        serde_json::json!({
            "bytes": args.bytes, "runs": args.runs,
            "direct_mb_s": direct, "agent_mb_s": agent, "ratio": ratio,
            "rss_before_kib": rss_before, "rss_peak_kib": rss_peak,
            "rss_growth_mib": growth_mib, "spool_bytes": spool_bytes,
            "recording": args.recording,
        })
    );
    stack.shutdown().await;
    Ok(())
}
