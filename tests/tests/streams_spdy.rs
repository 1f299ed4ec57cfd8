//! exec/attach over SPDY/3.1 against `streams::serve`, with a client built on the codec:
//! negotiation, stdin echo with FIN, v4 status JSON, v1 text status, PING echo.
#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod streams_support;

use gatehouse_common::spdy::Frame;
use std::time::Duration;
use streams_support::spdy_client::{Client, upgrade};
use streams_support::{container, start};
use tokio::net::TcpStream;

const KUBECTL_120: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

#[tokio::test]
async fn spdy_exec_echoes_stdin_and_reports_success() {
    let srv = start(vec![container("app", &[])]).await;
    srv.wait_running("app").await;
    let mut tcp = TcpStream::connect(srv.addr).await.unwrap();
    let (status, headers) = upgrade(
        &mut tcp,
        "POST",
        &srv.path("exec", "command=cat&stdin=true&stdout=true&stderr=true"),
        KUBECTL_120,
    )
    .await;
    assert_eq!(status, 101);
    assert!(headers.contains(&(
        "x-stream-protocol-version".into(),
        "v4.channel.k8s.io".into()
    )));
    let mut c = Client::new(tcp);
    let fut = async {
        let error = c.open(&[("streamtype", "error")]).await;
        let stdin = c.open(&[("streamtype", "stdin")]).await;
        let stdout = c.open(&[("streamtype", "stdout")]).await;
        let stderr = c.open(&[("streamtype", "stderr")]).await;
        c.send(Frame::Ping { id: 1 }).await;
        c.data(stdin, b"hello spdy\n", false).await;
        c.data(stdin, b"", true).await;
        c.read_until(|c| c.stream(error).fin && c.goaway).await;
        assert_eq!(c.stream(stdout).data, b"hello spdy\n");
        assert!(c.stream(stdout).fin && c.stream(stderr).fin);
        assert_eq!(
            c.stream(error).data,
            br#"{"metadata":{},"status":"Success"}"#
        );
        assert_eq!(c.pings, [1]);
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap();
    srv.shutdown().await;
}

#[tokio::test]
async fn spdy_v1_exec_reports_failure_as_text() {
    let srv = start(vec![container("app", &[])]).await;
    srv.wait_running("app").await;
    let mut tcp = TcpStream::connect(srv.addr).await.unwrap();
    let (status, _) = upgrade(
        &mut tcp,
        "POST",
        &srv.path("exec", "command=sh&command=-c&command=exit%207&stdout=true"),
        &["channel.k8s.io"],
    )
    .await;
    assert_eq!(status, 101);
    let mut c = Client::new(tcp);
    let fut = async {
        let error = c.open(&[("StreamType", "error")]).await;
        let _stdout = c.open(&[("streamtype", "stdout")]).await;
        c.read_until(|c| c.stream(error).fin).await;
        let text = String::from_utf8(c.stream(error).data.clone()).unwrap();
        assert!(text.contains("exit status 7"), "{text}");
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap();
    srv.shutdown().await;
}

#[tokio::test]
async fn spdy_exit_code_status_and_unknown_protocol() {
    let srv = start(vec![container("app", &[])]).await;
    srv.wait_running("app").await;
    let mut tcp = TcpStream::connect(srv.addr).await.unwrap();
    let (status, headers) = upgrade(
        &mut tcp,
        "POST",
        &srv.path("exec", "command=true&stdout=true"),
        &["v9.channel.k8s.io"],
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        headers
            .iter()
            .any(|(k, _)| k == "x-accepted-stream-protocol-versions")
    );

    let mut tcp = TcpStream::connect(srv.addr).await.unwrap();
    upgrade(
        &mut tcp,
        "POST",
        &srv.path("exec", "command=sh&command=-c&command=exit%204&stdout=true"),
        KUBECTL_120,
    )
    .await;
    let mut c = Client::new(tcp);
    let fut = async {
        let error = c.open(&[("streamtype", "error")]).await;
        c.open(&[("streamtype", "stdout")]).await;
        c.read_until(|c| c.stream(error).fin).await;
        let status: serde_json::Value = serde_json::from_slice(&c.stream(error).data).unwrap();
        assert_eq!(status["details"]["causes"][0]["message"], "4");
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap();
    srv.shutdown().await;
}

#[tokio::test]
async fn malformed_spdy_input_ends_the_session_cleanly() {
    let srv = start(vec![container("app", &[])]).await;
    srv.wait_running("app").await;
    let mut tcp = TcpStream::connect(srv.addr).await.unwrap();
    upgrade(
        &mut tcp,
        "POST",
        &srv.path("exec", "command=cat&stdin=true&stdout=true"),
        KUBECTL_120,
    )
    .await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A control frame with version 2, then garbage.
    tcp.write_all(&[0x80, 0x02, 0x00, 0x01, 0, 0, 0, 2, 0xde, 0xad])
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    // The server closes (possibly after a GOAWAY), and keeps serving others.
    assert!(
        n == 0 || buf[..4] == [0x80, 0x03, 0x00, 0x07],
        "{:?}",
        &buf[..n]
    );
    srv.shutdown().await;
}
