//! port-forward against `streams::serve`: SPDY (`portforward.k8s.io`) and SPDY tunnelled in
//! WebSocket (`SPDY/3.1+portforward.k8s.io`, frames split across messages) to a loopback
//! echo server; connection refused reported on the error stream.
#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod streams_support;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use gatehouse_common::spdy::{Decoder, Encoder, FLAG_FIN, Frame, Headers};
use std::collections::HashMap;
use std::time::Duration;
use streams_support::spdy_client::{Client, upgrade};
use streams_support::{container, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// An echo server on loopback; returns its port.
async fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn spdy_port_forward_echoes_and_reports_refused() {
    let srv = start(vec![container("app", &[])]).await;
    let port = echo_server().await;
    let mut tcp = TcpStream::connect(srv.addr).await.unwrap();
    let (status, headers) = upgrade(
        &mut tcp,
        "POST",
        &srv.path("portforward", ""),
        &["portforward.k8s.io"],
    )
    .await;
    assert_eq!(status, 101);
    assert!(headers.contains(&(
        "x-stream-protocol-version".into(),
        "portforward.k8s.io".into()
    )));
    let mut c = Client::new(tcp);
    let p = port.to_string();
    let fut = async {
        let error = c
            .open(&[("streamtype", "error"), ("port", &p), ("requestid", "0")])
            .await;
        c.data(error, b"", true).await;
        let data = c
            .open(&[("streamtype", "data"), ("port", &p), ("requestid", "0")])
            .await;
        c.data(data, b"ping through spdy", false).await;
        c.read_until(|c| c.stream(data).data.len() >= 17).await;
        assert_eq!(c.stream(data).data, b"ping through spdy");
        c.data(data, b"", true).await;
        c.read_until(|c| c.stream(data).fin && c.stream(error).fin)
            .await;
        assert!(c.stream(error).data.is_empty());

        // A port nobody listens on: the error stream says so.
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port().to_string()
        };
        let error = c
            .open(&[
                ("streamtype", "error"),
                ("port", &closed),
                ("requestid", "1"),
            ])
            .await;
        c.data(error, b"", true).await;
        let _data = c
            .open(&[
                ("streamtype", "data"),
                ("port", &closed),
                ("requestid", "1"),
            ])
            .await;
        c.read_until(|c| c.stream(error).fin).await;
        let msg = String::from_utf8(c.stream(error).data.clone()).unwrap();
        assert!(
            msg.contains(&format!("error forwarding port {closed} to pod web")),
            "{msg}"
        );
        assert!(msg.contains("connection refused"), "{msg}");
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap();
    srv.shutdown().await;
}

#[tokio::test]
async fn websocket_tunnelled_port_forward_survives_split_frames() {
    let srv = start(vec![container("app", &[])]).await;
    let port = echo_server().await;
    // Pod port 80 maps to the echo server, as the port-map annotation would say.
    srv.runtime.set_port_map(
        &srv.pod.uid,
        gatehouse_tests::emulator::runtime::parse_port_map(&format!("80={port}")),
    );
    let mut req = format!("ws://{}{}", srv.addr, srv.path("portforward", ""))
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "SPDY/3.1+portforward.k8s.io".parse().unwrap(),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers()["Sec-WebSocket-Protocol"],
        "SPDY/3.1+portforward.k8s.io"
    );
    let mut enc = Encoder::new();
    let mut wire = BytesMut::new();
    let syn = |id: u32, kind: &str, fin: bool| Frame::SynStream {
        stream_id: id,
        associated_id: 0,
        priority: 0,
        slot: 0,
        flags: if fin { FLAG_FIN } else { 0 },
        headers: Headers::new()
            .with("streamtype", kind)
            .with("port", "80")
            .with("requestid", "0"),
    };
    enc.encode(&syn(1, "error", true), &mut wire).unwrap();
    enc.encode(&syn(3, "data", false), &mut wire).unwrap();
    enc.encode(
        &Frame::data(3, Bytes::from_static(b"tunnelled ping"), false),
        &mut wire,
    )
    .unwrap();
    // 5-byte messages: no frame boundary lines up with a message boundary.
    for chunk in wire.chunks(5) {
        ws.send(Message::binary(chunk.to_vec())).await.unwrap();
    }
    let mut dec = Decoder::new();
    let mut got: HashMap<u32, Vec<u8>> = HashMap::new();
    let fut = async {
        while got.get(&3).map_or(0, Vec::len) < 14 {
            let Some(Ok(msg)) = ws.next().await else {
                panic!("tunnel closed")
            };
            if let Message::Binary(b) = msg {
                dec.feed(&b);
                while let Some(f) = dec.next_frame().unwrap() {
                    if let Frame::Data {
                        stream_id, data, ..
                    } = f
                    {
                        got.entry(stream_id).or_default().extend_from_slice(&data);
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap();
    assert_eq!(got[&3], b"tunnelled ping");
    ws.close(None).await.unwrap();
    srv.shutdown().await;
}

#[tokio::test]
async fn legacy_channel_port_forward_announces_ports_and_echoes() {
    let srv = start(vec![container("app", &[])]).await;
    let port = echo_server().await;
    let mut req = format!(
        "ws://{}{}",
        srv.addr,
        srv.path("portforward", &format!("ports={port}"))
    )
    .into_client_request()
    .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.channel.k8s.io".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let le = port.to_le_bytes();
    let mut first = Vec::new();
    for _ in 0..2 {
        let Some(Ok(Message::Binary(b))) = ws.next().await else {
            panic!("expected the port announcements")
        };
        first.push(b.to_vec());
    }
    assert_eq!(first, [vec![0, le[0], le[1]], vec![1, le[0], le[1]]]);
    ws.send(Message::binary(b"\x00legacy".to_vec()))
        .await
        .unwrap();
    let fut = async {
        let mut got = Vec::new();
        while got.len() < 6 {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) if b.first() == Some(&0) => {
                    got.extend_from_slice(&b[1..])
                }
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        got
    };
    let got = tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap();
    assert_eq!(got, b"legacy");
    srv.shutdown().await;
}
