//! Session recording end to end with real parts: kubectl (1.32 over WebSocket, 1.20 over
//! SPDY) → the real `gatehouse-agent` (recorder, spool, shipper) → the real
//! `gatehouse-collector` (embedded store, query API) → the real `gatehouse` CLI fetching
//! and replaying the asciicast. Also: exit codes, `kubectl cp`, the idle-timeout message
//! kubectl prints, and malformed frames from a hand-written client.
//!
//! Needs the binaries: `cargo build -p gatehouse-agent -p gatehouse-collector --bins`.

mod collector_support;

use collector_support::{Collector, Pki, WAIT};
use gatehouse_common::audit::{AuditEvent, SessionEndEvent, SessionKind};
use gatehouse_tests::harness::kubectl::Kubectl;
use gatehouse_tests::harness::ports::free_loopback_addr;
use gatehouse_tests::harness::stack::{Stack, StackOptions};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

const NODE: &str = "node-rec";
const NS: &str = "rec";
const POD: &str = "box";

/// Agent (recording on, spool + shipper) → collector (embedded store, query API).
struct Rig {
    stack: Stack,
    collector: Collector,
    pki: Pki,
    dir: tempfile::TempDir,
    audit: PathBuf,
    api_url: String,
    token_file: PathBuf,
}

impl Rig {
    async fn start(extra_agent_args: &[&str]) -> anyhow::Result<Self> {
        let pki = Pki::new()?;
        let (agent_cert, agent_key) = pki.agent(NODE)?.write(pki.dir.path(), "agent")?;
        let collector_ca = pki.dir.path().join("collector-ca.crt");
        pki.server_ca.write_cert(&collector_ca)?;
        let ingest = free_loopback_addr()?;
        let dir = tempfile::tempdir()?;
        let audit = dir.path().join("audit.jsonl");
        let mut options = StackOptions::new(dir.path().join("stack"));
        options.agent_args = vec![
            format!("--audit-log={}", audit.display()),
            format!("--node-name={NODE}"),
            format!("--spool-dir={}", dir.path().join("spool").display()),
            format!("--collector-url=https://{ingest}"),
            format!("--collector-ca-file={}", collector_ca.display()),
            format!("--collector-client-cert={}", agent_cert.display()),
            format!("--collector-client-key={}", agent_key.display()),
            "--ship-backoff-max=1s".into(),
        ];
        options
            .agent_args
            .extend(extra_agent_args.iter().map(|s| s.to_string()));
        let stack = Stack::start(options).await?;
        let api_addr = free_loopback_addr()?;
        let collector = Collector::start_embedded_with(
            &pki,
            &dir.path().join("store"),
            ingest,
            &[
                format!("--api-listen={api_addr}"),
                format!("--oidc-issuer-url={}", stack.issuer.issuer_url()),
                format!("--oidc-client-id={}", stack.issuer.client_id()),
                format!("--oidc-ca-file={}", stack.ca_cert_path().display()),
            ],
        )
        .await?;
        let token = stack
            .issuer
            .mint("sam", &["security"], Duration::from_secs(3600))?;
        let token_file = dir.path().join("query.token");
        std::fs::write(&token_file, token)?;
        let rig = Self {
            stack,
            collector,
            pki,
            dir,
            audit,
            api_url: format!("https://127.0.0.1:{}", api_addr.port()),
            token_file,
        };
        rig.running_pod().await?;
        Ok(rig)
    }

    fn kubectl(&self) -> anyhow::Result<Kubectl> {
        Kubectl::v1_32(&self.stack.kubeconfig_for("bob")?)
    }

    async fn running_pod(&self) -> anyhow::Result<()> {
        let k = self.kubectl()?;
        let _ = k.run(&["create", "namespace", NS]).await?;
        let manifest = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": POD, "namespace": NS},
            "spec": {"containers": [{"name": "main", "image": "busybox",
                "command": ["sh", "-c", "sleep 3600"]}]}
        });
        let path = self.dir.path().join("pod.json");
        std::fs::write(&path, manifest.to_string())?;
        k.run(&["apply", "-f", &path.to_string_lossy()])
            .await?
            .ok()?;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let out = k
                .run(&[
                    "get",
                    "pod",
                    POD,
                    "-n",
                    NS,
                    "-o",
                    "jsonpath={.status.phase}",
                ])
                .await?;
            if out.stdout == "Running" {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "pod never Running: {out:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The `SessionEnd` the agent wrote for the session matching `pick`, waited for.
    async fn session_end(
        &self,
        pick: impl Fn(&SessionEndEvent) -> bool,
    ) -> anyhow::Result<SessionEndEvent> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = std::fs::read_to_string(&self.audit).unwrap_or_default();
            let found = text
                .lines()
                .filter_map(|l| serde_json::from_str::<AuditEvent>(l).ok())
                .filter_map(|e| match e {
                    AuditEvent::SessionEnd(s) => Some(s),
                    _ => None,
                })
                .filter(|s| pick(s))
                .last();
            if let Some(s) = found {
                return Ok(s);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no matching SessionEnd in the agent's audit log:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs the real `gatehouse` CLI against the query API: (success, stdout, stderr).
    async fn cli(&self, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
        let bin = gatehouse_tests::harness::stack::find_bin_dir()?.join("gatehouse");
        let ca = self.pki.dir.path().join("collector-ca.crt");
        let out = tokio::time::timeout(
            WAIT,
            tokio::process::Command::new(bin)
                .args(args)
                .args(["--collector-url", &self.api_url])
                .arg(format!("--ca-file={}", ca.display()))
                .arg(format!("--token-file={}", self.token_file.display()))
                .env("HOME", self.dir.path())
                .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
                .stdin(std::process::Stdio::null())
                .output(),
        )
        .await??;
        Ok((
            out.status.success(),
            String::from_utf8(out.stdout)?,
            String::from_utf8(out.stderr)?,
        ))
    }

    /// Waits until the collector holds the session, then fetches its .cast with
    /// `gatehouse sessions replay --output-file`.
    async fn cast(&self, session_id: &str) -> anyhow::Result<Cast> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (ok, _, err) = self.cli(&["sessions", "show", session_id]).await?;
            if ok {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the collector never had session {session_id}: {err}\n{}",
                self.collector.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let file = self.dir.path().join(format!("{session_id}.cast"));
        let path = file.to_string_lossy().into_owned();
        let (ok, _, err) = self
            .cli(&["sessions", "replay", session_id, "--output-file", &path])
            .await?;
        anyhow::ensure!(ok, "replay --output-file failed: {err}");
        Cast::parse(&std::fs::read_to_string(&file)?)
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stack.shutdown().await;
        self.collector.stop().await
    }
}

/// A parsed asciicast v2 file.
struct Cast {
    header: Value,
    events: Vec<(f64, String, String)>,
}

impl Cast {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let mut lines = text.lines();
        let header: Value = serde_json::from_str(lines.next().unwrap_or(""))?;
        anyhow::ensure!(header["version"] == 2, "not asciicast v2: {header}");
        let mut events = Vec::new();
        for line in lines {
            events.push(serde_json::from_str::<(f64, String, String)>(line)?);
        }
        Ok(Self { header, events })
    }

    /// Every event of kind `code` joined.
    fn joined(&self, code: &str) -> String {
        self.events
            .iter()
            .filter(|e| e.1 == code)
            .map(|e| e.2.as_str())
            .collect()
    }

    fn times_increase(&self) -> bool {
        self.events.windows(2).all(|w| w[0].0 <= w[1].0)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn non_tty_exec_with_piped_stdin_is_recorded_byte_exact_with_its_exit_code()
-> anyhow::Result<()> {
    let rig = Rig::start(&[]).await?;
    let k = rig.kubectl()?;
    // A script piped in (what attackers do): stdin is recorded although there is no tty.
    let script = "echo one\nprintf 'two\\n' >&2\necho ünïcödé €\nexit 4\n";
    let out = k
        .run_with_stdin(
            &["exec", "-i", POD, "-n", NS, "--", "sh"],
            Some(script.as_bytes()),
        )
        .await?;
    assert_eq!(out.code, 4, "{out:?}");
    let end = rig
        .session_end(|s| s.pod == POD && s.exit_code == Some(4))
        .await?;
    assert_eq!(end.kind, SessionKind::Exec);
    assert_eq!(end.protocol, "v5.channel.k8s.io");
    assert_eq!(end.stdin_bytes, script.len() as u64);
    assert_eq!(
        end.output_bytes,
        (out.stdout.len() + "two\n".len()) as u64,
        "{out:?}"
    );
    assert!(end.recording_chunks >= 2, "{end:?}");
    assert!(end.duration_ms > 0.0);
    let exec = end.exec.clone().unwrap_or_default();
    assert_eq!(exec.command, vec!["sh".to_string()]);
    assert!(!exec.tty && exec.stdin);

    let cast = rig.cast(&end.session_id).await?;
    assert_eq!(cast.joined("i"), script, "stdin recorded byte-exact");
    let output = cast.joined("o");
    assert_eq!(
        output.replace("two\n", ""),
        out.stdout,
        "stdout recorded byte-exact"
    );
    assert!(output.contains("two\n"), "stderr recorded: {output:?}");
    assert!(cast.times_increase());
    assert_eq!(
        cast.header["gatehouse"]["session_id"],
        end.session_id.as_str()
    );
    assert_eq!(cast.header["gatehouse"]["user"], end.user.as_str());
    assert_eq!(cast.header["gatehouse"]["pod"], POD);
    assert_eq!(cast.header["gatehouse"]["namespace"], NS);

    // The CLI replays it: --raw writes the output without timing.
    let (ok, replayed, err) = rig
        .cli(&["sessions", "replay", &end.session_id, "--raw"])
        .await?;
    assert!(ok, "{err}");
    assert_eq!(replayed, output);
    let (ok, shown, err) = rig.cli(&["sessions", "show", &end.session_id]).await?;
    assert!(ok, "{err}");
    assert!(shown.contains("Exit code: 4"), "{shown}");

    // A plain non-interactive exec: exit 0 from the `Success` status.
    let out = k
        .run(&["exec", POD, "-n", NS, "--", "sh", "-c", "echo fine"])
        .await?
        .ok()?;
    assert_eq!(out.stdout, "fine\n");
    let end = rig
        .session_end(|s| {
            s.exec
                .as_ref()
                .is_some_and(|e| e.command.last().is_some_and(|c| c == "echo fine"))
        })
        .await?;
    assert_eq!(end.exit_code, Some(0));
    assert_eq!(rig.cast(&end.session_id).await?.joined("o"), "fine\n");
    rig.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_in_exec_output_and_stdin_are_masked_in_the_recording() -> anyhow::Result<()> {
    let rig = Rig::start(&[]).await?;
    let k = rig.kubectl()?;
    // The key leaves the container in two writes 300 ms apart: two frames, so the recorder's
    // masker has to hold the first half back. The same key also goes in on stdin.
    let key = "AKIAIOSFODNN7EXAMPLE";
    let script = format!(
        "printf 'id=AKIAIOSF'; sleep 0.3; printf 'ODNN7EXAMPLE done\\n'\necho {key} >/dev/null\n"
    );
    let out = k
        .run_with_stdin(
            &["exec", "-i", POD, "-n", NS, "--", "sh"],
            Some(script.as_bytes()),
        )
        .await?
        .ok()?;
    assert!(out.stdout.ends_with(" done\n"), "{out:?}");
    let end = rig
        .session_end(|s| s.pod == POD && s.stdin_bytes == script.len() as u64)
        .await?;
    let cast = rig.cast(&end.session_id).await?;
    let output = cast.joined("o");
    let input = cast.joined("i");
    assert_eq!(
        output, "id=***MASKED*** done\n",
        "split key masked in the output"
    );
    assert!(
        !input.contains(key),
        "stdin key recorded unmasked: {input:?}"
    );
    assert!(input.contains("***MASKED***"), "{input:?}");
    // Nor does any chunk of the stored recording hold it, replayed through the CLI.
    let (ok, replayed, err) = rig
        .cli(&["sessions", "replay", &end.session_id, "--raw"])
        .await?;
    assert!(ok, "{err}");
    assert!(
        !replayed.contains(key) && !replayed.contains("ODNN7EXAMPLE"),
        "{replayed:?}"
    );
    rig.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn tty_exec_with_a_resize_is_recorded_and_replayable() -> anyhow::Result<()> {
    let rig = Rig::start(&[]).await?;
    let k = rig.kubectl()?;
    let mut pty = k.spawn_in_pty(&["exec", "-it", POD, "-n", NS, "--", "sh"])?;
    // The shell's prompt means kubectl has put the terminal in raw mode: keystrokes typed
    // before that would be cooked by the local tty (CR → NL) before kubectl reads them.
    let deadline = tokio::time::Instant::now() + WAIT;
    while pty.screen().is_empty() {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no prompt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut typed = String::new();
    let mut send = |pty: &mut gatehouse_tests::harness::kubectl::PtySession, s: &str| {
        typed.push_str(s);
        pty.send(s.as_bytes())
    };
    send(&mut pty, "echo answer=$((6*7))\r")?;
    pty.wait_for("answer=42", WAIT).await?;
    // Resize the terminal: kubectl (SIGWINCH) sends the new size on the resize channel.
    let size = libc::winsize {
        ws_row: 30,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ on the pty master we own, with a valid winsize.
    let rc = unsafe { libc::ioctl(pty.master_fd(), libc::TIOCSWINSZ, &size) };
    assert_eq!(rc, 0, "TIOCSWINSZ failed");
    send(
        &mut pty,
        "until [ \"$(stty size)\" = '30 100' ]; do sleep 0.1; done; echo size=$(stty size)\r",
    )?;
    pty.wait_for("size=30 100", WAIT).await?;
    send(&mut pty, "exit 0\r")?;
    assert_eq!(pty.wait_exit(WAIT).await?, 0, "{}", pty.screen());
    let screen = pty.screen();

    let end = rig
        .session_end(|s| s.exec.as_ref().is_some_and(|e| e.tty))
        .await?;
    assert_eq!(end.exit_code, Some(0));
    assert_eq!(
        end.terminal, "120x40",
        "first size (the pty starts at 120x40)"
    );
    let cast = rig.cast(&end.session_id).await?;
    assert_eq!(cast.header["width"], 120);
    assert_eq!(cast.header["height"], 40);
    assert_eq!(cast.header["gatehouse"]["tty"], true);
    let resizes: Vec<String> = cast
        .events
        .iter()
        .filter(|e| e.1 == "r")
        .map(|e| e.2.clone())
        .collect();
    assert_eq!(resizes.first().map(String::as_str), Some("120x40"));
    assert!(resizes.iter().any(|r| r == "100x30"), "{resizes:?}");
    assert_eq!(cast.joined("i"), typed, "keystrokes recorded byte-exact");
    let output = cast.joined("o");
    assert!(
        screen.starts_with(&output) && output.contains("answer=42"),
        "terminal output recorded byte-exact:\nrecorded {output:?}\nscreen {screen:?}"
    );
    assert!(cast.times_increase());
    let (ok, replayed, err) = rig
        .cli(&["sessions", "replay", &end.session_id, "--speed", "50"])
        .await?;
    assert!(ok, "{err}");
    assert_eq!(replayed, output);
    rig.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_cp_and_spdy_exec_are_recorded_sessions() -> anyhow::Result<()> {
    let rig = Rig::start(&[]).await?;
    let k = rig.kubectl()?;
    let local = rig.dir.path().join("upload.txt");
    let contents: String = (0..500).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&local, &contents)?;
    let remote_dir = rig.dir.path().join("in-container");
    std::fs::create_dir_all(&remote_dir)?;
    let remote = format!("{NS}/{POD}:{}/upload.txt", remote_dir.display());
    k.run(&["cp", &local.to_string_lossy(), &remote])
        .await?
        .ok()?;
    let end = rig
        .session_end(|s| {
            s.exec
                .as_ref()
                .is_some_and(|e| e.command.first().is_some_and(|c| c == "tar"))
        })
        .await?;
    assert_eq!(end.exit_code, Some(0), "{end:?}");
    assert!(
        end.stdin_bytes > contents.len() as u64,
        "the tar stream is stdin"
    );
    assert!(
        rig.cast(&end.session_id)
            .await?
            .joined("i")
            .contains("line 499")
    );

    // kubectl 1.20 speaks SPDY/3.1.
    match gatehouse_tests::harness::tools::kubectl_1_20() {
        Err(why) => eprintln!("SKIP: SPDY part (kubectl 1.20 not installed: {why})"),
        Ok(_) => {
            let old = Kubectl::v1_20(&rig.stack.kubeconfig_for("bob")?)?;
            let out = old
                .run_with_stdin(
                    &[
                        "exec",
                        "-i",
                        POD,
                        "-n",
                        NS,
                        "--",
                        "sh",
                        "-c",
                        "tr a-z A-Z; exit 2",
                    ],
                    Some(b"spdy stdin\n"),
                )
                .await?;
            assert_eq!(out.code, 2, "{out:?}");
            assert_eq!(out.stdout, "SPDY STDIN\n");
            let end = rig
                .session_end(|s| {
                    s.protocol.to_ascii_lowercase().contains("spdy") || s.exit_code == Some(2)
                })
                .await?;
            assert_eq!(end.exit_code, Some(2), "{end:?}");
            let cast = rig.cast(&end.session_id).await?;
            assert_eq!(cast.joined("i"), "spdy stdin\n");
            assert_eq!(cast.joined("o"), "SPDY STDIN\n");
        }
    }
    rig.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_end_with_a_message_kubectl_prints() -> anyhow::Result<()> {
    let rig = Rig::start(&["--session-idle-timeout=2s"]).await?;
    let k = rig.kubectl()?;
    let mut running = k.spawn(&["exec", POD, "-n", NS, "--", "sleep", "60"])?;
    let code = running.wait_exit(WAIT).await?;
    assert_ne!(code, 0);
    let stderr = running.stderr();
    assert!(
        stderr.contains("session idle timeout") && stderr.contains("after 2s"),
        "kubectl did not print why: {stderr}"
    );
    let end = rig.session_end(|s| s.end_reason == "idle_timeout").await?;
    assert_eq!(end.pod, POD);
    // kubectl 1.20 over SPDY gets the message on the error stream.
    match gatehouse_tests::harness::tools::kubectl_1_20() {
        Err(why) => eprintln!("SKIP: SPDY idle timeout (kubectl 1.20 not installed: {why})"),
        Ok(_) => {
            std::fs::write(&rig.audit, "")?;
            let old = Kubectl::v1_20(&rig.stack.kubeconfig_for("bob")?)?;
            let mut running = old.spawn(&["exec", POD, "-n", NS, "--", "sleep", "60"])?;
            assert_ne!(running.wait_exit(WAIT).await?, 0);
            let stderr = running.stderr();
            assert!(
                stderr.contains("session idle timeout"),
                "kubectl 1.20 did not print why: {stderr}"
            );
            rig.session_end(|s| s.end_reason == "idle_timeout").await?;
        }
    }
    rig.stop().await
}

/// A hand-written WebSocket client sends a frame with reserved bits set: the session ends
/// with an error reason, and the agent goes on serving.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_frames_end_the_session_with_an_error_and_the_agent_keeps_serving()
-> anyhow::Result<()> {
    let rig = Rig::start(&[]).await?;
    for (name, garbage) in [
        ("reserved bits", vec![0xf2u8, 0x81, 1, 2, 3, 4, 5]),
        ("unmasked", vec![0x82u8, 0x01, 0x00]),
    ] {
        raw_ws_exec(&rig, &garbage).await?;
        let end = rig
            .session_end(|s| s.end_reason.starts_with("tap: websocket"))
            .await?;
        assert!(
            end.end_reason.contains("websocket"),
            "{name}: {}",
            end.end_reason
        );
        // Make the next search find the next session only.
        std::fs::write(&rig.audit, "")?;
    }
    let out = rig
        .kubectl()?
        .run(&["exec", POD, "-n", NS, "--", "echo", "still serving"])
        .await?
        .ok()?;
    assert_eq!(out.stdout, "still serving\n");
    rig.stop().await
}

/// Opens a v5 exec WebSocket through the agent by hand (TLS, bearer token) and writes
/// `frames` after the 101; waits until the agent closes.
async fn raw_ws_exec(rig: &Rig, frames: &[u8]) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let token = rig
        .stack
        .issuer
        .mint_dev("bob")
        .ok_or_else(|| anyhow::anyhow!("no dev user bob"))??;
    let ca = std::fs::read(rig.stack.ca_cert_path())?;
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert?)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let url: http::Uri = rig.stack.agent_url().parse()?;
    let port = url.port_u16().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
    let mut s = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(name, tcp)
        .await?;
    let req = format!(
        "GET /api/v1/namespaces/{NS}/pods/{POD}/exec?command=cat&stdin=true&stdout=true HTTP/1.1\r\n\
         Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(s.read(&mut byte).await? == 1, "closed before the 101");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    anyhow::ensure!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(frames).await?;
    s.flush().await?;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut rest)).await?;
    Ok(())
}

/// kubectl 1.32 port-forward (SPDY tunnelled in WebSocket): the session records ports,
/// connections and bytes, and no payload.
#[tokio::test(flavor = "multi_thread")]
async fn port_forward_is_recorded_as_metadata_only() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rig = Rig::start(&[]).await?;
    // The pod's port P is the loopback port P: an echo server stands in for the app.
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let pod_port = server.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = server.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 || sock.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let local_port = free_loopback_addr()?.port();
    let mapping = format!("{local_port}:{pod_port}");
    let mut pf =
        rig.kubectl()?
            .spawn(&["port-forward", "-n", NS, &format!("pod/{POD}"), &mapping])?;
    pf.wait_line(WAIT, |l| l.starts_with("Forwarding from 127.0.0.1:"))
        .await?;
    let msg = b"secret payload through the tunnel";
    for _ in 0..2 {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", local_port)).await?;
        conn.write_all(msg).await?;
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(WAIT, conn.read_exact(&mut got)).await??;
        assert_eq!(&got, msg);
    }
    pf.stop().await;
    let end = rig
        .session_end(|s| s.kind == SessionKind::PortForward)
        .await?;
    assert_eq!(end.ports.len(), 1, "{end:?}");
    let port = &end.ports[0];
    assert_eq!(port.port, pod_port);
    assert_eq!(port.connections, 2);
    assert_eq!(port.bytes_from_client, 2 * msg.len() as u64);
    assert_eq!(port.bytes_to_client, 2 * msg.len() as u64);
    assert_eq!(end.recording_chunks, 0, "no payload is recorded");
    let text = std::fs::read_to_string(&rig.audit)?;
    assert!(
        !text.contains("secret payload"),
        "port-forward payload reached the audit trail"
    );
    rig.stop().await
}
