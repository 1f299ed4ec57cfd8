//! exec/attach over WebSocket (`v5`/`v4.channel.k8s.io`) against `streams::serve`:
//! stdin echo with v5 close, exit-code Status, tty resize, command not found, cgroups.
#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod streams_support;

use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use streams_support::{container, start};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, protocol: &str) -> (Ws, Option<String>) {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    let proto = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap().to_string());
    (ws, proto)
}

/// Collected session: bytes per channel, and whether a Close(1000) ended it.
#[derive(Default, Debug)]
struct Session {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    error: Vec<u8>,
    first: Option<Vec<u8>>,
    closed_normally: bool,
}

async fn collect(ws: &mut Ws) -> Session {
    let mut s = Session::default();
    let fut = async {
        while let Some(msg) = ws.next().await {
            match msg.unwrap() {
                Message::Binary(b) => {
                    if s.first.is_none() {
                        s.first = Some(b.to_vec());
                    }
                    match b.first() {
                        Some(1) => s.stdout.extend_from_slice(&b[1..]),
                        Some(2) => s.stderr.extend_from_slice(&b[1..]),
                        Some(3) => s.error.extend_from_slice(&b[1..]),
                        _ => {}
                    }
                }
                Message::Close(frame) => {
                    s.closed_normally = frame.is_some_and(|f| u16::from(f.code) == 1000);
                    break;
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .expect("session timed out");
    s
}

#[tokio::test]
async fn v5_exec_echoes_stdin_until_close_and_reports_success() {
    let srv = start(vec![container("app", &[])]).await;
    srv.wait_running("app").await;
    let (mut ws, proto) = connect(
        &srv.ws_url("exec", "command=cat&stdin=true&stdout=true&stderr=true"),
        "v5.channel.k8s.io",
    )
    .await;
    assert_eq!(proto.as_deref(), Some("v5.channel.k8s.io"));
    ws.send(Message::binary(b"\x00hello\n".to_vec()))
        .await
        .unwrap();
    ws.send(Message::binary(vec![0xff, 0x00])).await.unwrap();
    let s = collect(&mut ws).await;
    assert_eq!(
        s.first.as_deref(),
        Some(&[1u8][..]),
        "initial empty stdout message"
    );
    assert_eq!(s.stdout, b"hello\n");
    assert_eq!(s.error, br#"{"metadata":{},"status":"Success"}"#);
    assert!(s.closed_normally);
    srv.shutdown().await;
}

#[tokio::test]
async fn v4_exec_reports_non_zero_exit_code_and_keeps_stderr_apart() {
    let srv = start(vec![container("app", &[])]).await;
    srv.wait_running("app").await;
    let (mut ws, proto) = connect(
        &srv.ws_url(
            "exec",
            "command=sh&command=-c&command=echo%20out%3B%20echo%20err%20%3E%262%3B%20exit%203&stdout=true&stderr=1",
        ),
        "v4.channel.k8s.io",
    )
    .await;
    assert_eq!(proto.as_deref(), Some("v4.channel.k8s.io"));
    let s = collect(&mut ws).await;
    assert_eq!(s.stdout, b"out\n");
    assert_eq!(s.stderr, b"err\n");
    let status: serde_json::Value = serde_json::from_slice(&s.error).unwrap();
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
    srv.shutdown().await;
}

#[tokio::test]
async fn tty_exec_applies_resize() {
    let srv = start(vec![container("app", &[])]).await;
    srv.wait_running("app").await;
    let (mut ws, _) = connect(
        &srv.ws_url(
            "exec",
            "command=sh&command=-c&command=sleep%200.5%3B%20stty%20size&stdin=true&stdout=true&tty=true",
        ),
        "v5.channel.k8s.io",
    )
    .await;
    ws.send(Message::binary(
        b"\x04{\"Width\":123,\"Height\":45}\n".to_vec(),
    ))
    .await
    .unwrap();
    let s = collect(&mut ws).await;
    let out = String::from_utf8_lossy(&s.stdout);
    assert!(out.contains("45 123"), "stty output: {out:?}");
    assert_eq!(s.error, br#"{"metadata":{},"status":"Success"}"#);
    srv.shutdown().await;
}

#[tokio::test]
async fn missing_command_is_a_failure_status() {
    let srv = start(vec![container("app", &[])]).await;
    srv.wait_running("app").await;
    let (mut ws, _) = connect(
        &srv.ws_url("exec", "command=no-such-binary-xyz&stdout=true"),
        "v5.channel.k8s.io",
    )
    .await;
    let s = collect(&mut ws).await;
    let status: serde_json::Value = serde_json::from_slice(&s.error).unwrap();
    assert_eq!(status["status"], "Failure");
    let msg = status["message"].as_str().unwrap();
    assert!(msg.contains("executable file not found in $PATH"), "{msg}");
    srv.shutdown().await;
}

#[tokio::test]
async fn unknown_subprotocol_is_refused_so_kubectl_falls_back() {
    let srv = start(vec![container("app", &[])]).await;
    let mut req = srv
        .ws_url("exec", "command=true&stdout=true")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v9.channel.k8s.io".parse().unwrap(),
    );
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    assert!(
        matches!(err, tokio_tungstenite::tungstenite::Error::Http(ref r) if r.status() == 400),
        "{err:?}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn ambiguous_container_is_rejected_like_the_apiserver() {
    let srv = start(vec![container("a", &[]), container("b", &[])]).await;
    let mut req = srv
        .ws_url("exec", "command=true&stdout=true")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    let tokio_tungstenite::tungstenite::Error::Http(resp) = err else {
        panic!("expected an HTTP error")
    };
    let body = String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap();
    assert!(
        body.contains("a container name must be specified for pod web, choose one of: [a b]"),
        "{body}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn exec_runs_in_the_container_cgroup_with_its_env() {
    let srv = start(vec![container("app", &[])]).await;
    srv.wait_running("app").await;
    let (mut ws, _) = connect(
        &srv.ws_url(
            "exec",
            "command=sh&command=-c&command=cat%20/proc/self/cgroup%3B%20echo%20%24GREETING&stdout=true",
        ),
        "v5.channel.k8s.io",
    )
    .await;
    let s = collect(&mut ws).await;
    let out = String::from_utf8_lossy(&s.stdout).to_string();
    assert!(out.contains("hello-from-env"), "{out}");
    if let Some(dir) = srv.runtime.container_cgroup(&srv.pod.uid, "app") {
        let rel = format!(
            "/{}",
            dir.strip_prefix("/sys/fs/cgroup/unified")
                .unwrap()
                .display()
        );
        assert!(rel.contains("/kubepods.slice/kubepods-pod1234abcd_0000_4000_8000_"));
        assert!(rel.ends_with(".scope"));
        assert!(out.contains(&format!("0::{rel}")), "{out} lacks {rel}");
        // The main process is in it too, and the id is the directory inode.
        let pid = srv.runtime.main_pid(&srv.pod.uid, "app").unwrap();
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(cg.contains(&format!("0::{rel}")), "{cg}");
        assert!(
            srv.runtime
                .container_cgroup_id(&srv.pod.uid, "app")
                .unwrap()
                > 1
        );
    } else {
        assert!(!streams_support::cgroups_available());
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn attach_streams_main_process_output_and_stdin() {
    let mut c = container("app", &["cat"]);
    c.stdin = true;
    let srv = start(vec![c]).await;
    srv.wait_running("app").await;
    let (mut ws, _) = connect(
        &srv.ws_url("attach", "container=app&stdin=true&stdout=true&stderr=true"),
        "v5.channel.k8s.io",
    )
    .await;
    ws.send(Message::binary(b"\x00ping\n".to_vec()))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        let mut out = Vec::new();
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Binary(b) = msg
                && b.first() == Some(&1)
            {
                out.extend_from_slice(&b[1..]);
                if out.ends_with(b"ping\n") {
                    return out;
                }
            }
        }
        out
    })
    .await
    .unwrap();
    assert_eq!(got, b"ping\n");
    // The container's log holds the same line.
    let log = srv.runtime.log(&srv.pod.uid, "app").unwrap();
    assert_eq!(log.since_seq(0).0[0].line, &b"ping\n"[..]);
    srv.shutdown().await;
}

#[tokio::test]
async fn base64_dialect_uses_text_messages() {
    use base64::Engine;
    let srv = start(vec![container("app", &[])]).await;
    srv.wait_running("app").await;
    let (mut ws, proto) = connect(
        &srv.ws_url("exec", "command=echo&command=b64&stdout=true"),
        "v4.base64.channel.k8s.io",
    )
    .await;
    assert_eq!(proto.as_deref(), Some("v4.base64.channel.k8s.io"));
    let mut stdout = Vec::new();
    let mut status = Vec::new();
    let fut = async {
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(t) = msg else { continue };
            let (ch, rest) = t.split_at(1);
            let data = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .unwrap();
            match ch {
                "1" => stdout.extend(data),
                "3" => status.extend(data),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap();
    assert_eq!(stdout, b"b64\n");
    assert_eq!(status, br#"{"metadata":{},"status":"Success"}"#);
    srv.shutdown().await;
}
