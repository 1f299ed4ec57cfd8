//! `pods/log` against `streams::serve`: captured output, tailLines, limitBytes,
//! timestamps, and `follow=true` streaming until the container exits.
#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod streams_support;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use streams_support::{container, start};
use tokio::net::TcpStream;

async fn get(addr: std::net::SocketAddr, path: &str) -> http::Response<hyper::body::Incoming> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "localhost")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    send.send_request(req).await.unwrap()
}

async fn body_text(resp: http::Response<hyper::body::Incoming>) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn logs_tail_limit_and_timestamps() {
    let srv = start(vec![container(
        "app",
        &[
            "sh",
            "-c",
            "echo one; echo two >&2; sleep 0.1; echo three; sleep 30",
        ],
    )])
    .await;
    let log = srv.runtime.log(&srv.pod.uid, "app").unwrap();
    for _ in 0..200 {
        if log.since_seq(0).0.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resp = get(srv.addr, &srv.path("log", "")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    let all = body_text(resp).await;
    assert!(all.contains("one\n") && all.contains("two\n") && all.contains("three\n"));
    assert_eq!(
        body_text(get(srv.addr, &srv.path("log", "tailLines=1")).await).await,
        "three\n"
    );
    assert_eq!(
        body_text(get(srv.addr, &srv.path("log", "limitBytes=2")).await).await,
        "on"
    );
    let ts = body_text(get(srv.addr, &srv.path("log", "timestamps=true&tailLines=1")).await).await;
    let (stamp, line) = ts.split_once(' ').unwrap();
    assert_eq!(line, "three\n");
    assert!(
        chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
        "{stamp}"
    );
    let resp = get(srv.addr, &srv.path("log", "previous=true")).await;
    assert_eq!(resp.status(), 400);
    srv.shutdown().await;
}

#[tokio::test]
async fn follow_streams_lines_until_the_container_exits() {
    let srv = start(vec![container(
        "app",
        &[
            "sh",
            "-c",
            "for i in 1 2 3; do echo line$i; sleep 0.2; done",
        ],
    )])
    .await;
    let resp = get(srv.addr, &srv.path("log", "follow=true&container=app")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut text = String::new();
    let mut frames = 0;
    let fut = async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                frames += 1;
                text.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap();
    assert_eq!(text, "line1\nline2\nline3\n");
    assert!(frames >= 3, "one chunk per line, got {frames}");
    srv.shutdown().await;
}
