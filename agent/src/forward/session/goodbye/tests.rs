//! Unit tests of the shutdown goodbye: protocol choice, frame following split anywhere,
//! and the exact frames kubectl receives.

use super::*;
use gatehouse_common::spdy::{FLAG_FIN, Headers};

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            h.append(n, v);
        }
    }
    h
}

fn ws(protocol: &str) -> Option<Goodbye> {
    Goodbye::for_upgrade(&headers(&[
        ("upgrade", "websocket"),
        ("sec-websocket-protocol", protocol),
    ]))
}

fn spdy(protocol: &str) -> Option<Goodbye> {
    Goodbye::for_upgrade(&headers(&[
        ("upgrade", "SPDY/3.1"),
        ("x-stream-protocol-version", protocol),
    ]))
}

/// Feeds `data` one byte at a time (the hardest split).
fn feed<O: Observe>(o: &mut O, data: &[u8]) {
    for b in data {
        o.observe(std::slice::from_ref(b));
    }
}

/// One parsed server-to-client WebSocket frame: (fin, opcode, payload).
fn parse_ws(mut wire: &[u8]) -> Vec<(bool, u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while wire.len() >= 2 {
        let (fin, opcode) = (wire[0] & 0x80 != 0, wire[0] & 0x0f);
        assert_eq!(wire[1] & 0x80, 0, "server frames are not masked");
        let (len, head) = match wire[1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([wire[2], wire[3]])), 4),
            127 => panic!("unexpectedly long frame"),
            n => (usize::from(n), 2),
        };
        frames.push((fin, opcode, wire[head..head + len].to_vec()));
        wire = &wire[head + len..];
    }
    assert!(wire.is_empty(), "trailing bytes {wire:?}");
    frames
}

fn status_message(json: &[u8]) -> anyhow::Result<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(json)?;
    assert_eq!(v["kind"], "Status");
    assert_eq!(v["apiVersion"], "v1");
    Ok((
        v["status"].as_str().unwrap_or_default().to_string(),
        v["message"].as_str().unwrap_or_default().to_string(),
    ))
}

#[test]
fn chooses_protocols_with_an_error_channel_only() {
    assert!(ws("v5.channel.k8s.io").is_some());
    assert!(ws("v4.channel.k8s.io").is_some());
    assert!(ws("v4.base64.channel.k8s.io").is_some());
    assert!(spdy("v4.channel.k8s.io").is_some());
    assert!(spdy("channel.k8s.io").is_some());
    // Port-forward has no remotecommand error channel; old WebSocket subprotocols and
    // compressed WebSocket frames are left alone (plain close as before).
    assert!(ws("SPDY/3.1+portforward.k8s.io").is_none());
    assert!(ws("v4.portforward.k8s.io").is_none());
    assert!(spdy("portforward.k8s.io").is_none());
    assert!(ws("channel.k8s.io").is_none());
    assert!(
        Goodbye::for_upgrade(&headers(&[
            ("upgrade", "websocket"),
            ("sec-websocket-protocol", "v5.channel.k8s.io"),
            ("sec-websocket-extensions", "permessage-deflate"),
        ]))
        .is_none()
    );
    assert!(Goodbye::for_upgrade(&headers(&[("upgrade", "h2c")])).is_none());
    assert!(Goodbye::for_upgrade(&HeaderMap::new()).is_none());
}

#[test]
fn websocket_goodbye_is_a_status_on_channel_3_then_a_normal_close() -> anyhow::Result<()> {
    let mut g = ws("v5.channel.k8s.io").ok_or_else(|| anyhow::anyhow!("no goodbye"))?;
    assert!(g.upstream.at_frame_boundary());
    // stdout (channel 1) frames: short, 16-bit length, a fragmented message with a ping
    // between its fragments, all split byte by byte.
    let mut stream = Vec::new();
    ws_frame(&mut stream, WS_BINARY, b"\x01hello\n");
    ws_frame(&mut stream, WS_BINARY, &[1u8; 300]);
    stream.extend_from_slice(&[0x02, 3, 1, b'a', b'b']); // non-final binary
    ws_frame(&mut stream, 0x9, b"ping");
    stream.extend_from_slice(&[0x80, 1, b'c']); // final continuation
    feed(&mut g.upstream, &stream);
    assert!(g.upstream.at_frame_boundary());
    assert!(!g.upstream.mid_message);
    let wire = g
        .farewell(SHUTDOWN_MESSAGE)
        .ok_or_else(|| anyhow::anyhow!("no farewell at a boundary"))?;
    let frames = parse_ws(&wire);
    assert_eq!(frames.len(), 2, "{frames:?}");
    let (fin, opcode, payload) = &frames[0];
    assert!(*fin);
    assert_eq!(*opcode, WS_BINARY);
    assert_eq!(payload[0], 3, "error channel");
    let (status, message) = status_message(&payload[1..])?;
    assert_eq!(status, "Failure");
    assert_eq!(message, SHUTDOWN_MESSAGE);
    let (fin, opcode, payload) = &frames[1];
    assert!(*fin);
    assert_eq!(*opcode, WS_CLOSE);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1000);
    Ok(())
}

#[test]
fn websocket_base64_goodbye_is_a_text_frame() -> anyhow::Result<()> {
    let g = ws("v4.base64.channel.k8s.io").ok_or_else(|| anyhow::anyhow!("no goodbye"))?;
    let wire = g
        .farewell(SHUTDOWN_MESSAGE)
        .ok_or_else(|| anyhow::anyhow!("no farewell"))?;
    let frames = parse_ws(&wire);
    assert_eq!(frames[0].1, WS_TEXT);
    assert_eq!(frames[0].2[0], b'3');
    let json = base64::engine::general_purpose::STANDARD.decode(&frames[0].2[1..])?;
    assert_eq!(status_message(&json)?.1, SHUTDOWN_MESSAGE);
    Ok(())
}

#[test]
fn websocket_goodbye_waits_for_frame_and_message_boundaries() -> anyhow::Result<()> {
    let mut g = ws("v5.channel.k8s.io").ok_or_else(|| anyhow::anyhow!("no goodbye"))?;
    let mut frame = Vec::new();
    ws_frame(&mut frame, WS_BINARY, &[1u8; 200]);
    g.upstream.observe(&frame[..1]);
    assert!(!g.upstream.at_frame_boundary(), "inside a header");
    assert_eq!(g.upstream.bytes_to_boundary(), 1);
    assert!(g.farewell(SHUTDOWN_MESSAGE).is_none());
    g.upstream.observe(&frame[1..50]);
    assert_eq!(g.upstream.bytes_to_boundary(), (frame.len() - 50) as u64);
    assert!(g.farewell(SHUTDOWN_MESSAGE).is_none(), "inside a payload");
    g.upstream.observe(&frame[50..]);
    assert!(g.upstream.at_frame_boundary());
    // Between two fragments of one message only the close may be sent.
    g.upstream.observe(&[0x02, 1, 1]);
    assert!(g.upstream.at_frame_boundary());
    let frames = parse_ws(
        &g.farewell(SHUTDOWN_MESSAGE)
            .ok_or_else(|| anyhow::anyhow!("close between fragments"))?,
    );
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].1, WS_CLOSE);
    Ok(())
}

#[test]
fn websocket_garbage_loses_the_framing_and_the_goodbye() -> anyhow::Result<()> {
    let mut g = ws("v5.channel.k8s.io").ok_or_else(|| anyhow::anyhow!("no goodbye"))?;
    // A continuation with no message to continue is not WebSocket from a sane server.
    g.upstream.observe(&[0x80, 0]);
    assert!(g.upstream.is_lost());
    assert_eq!(g.upstream.bytes_to_boundary(), 0);
    assert!(g.farewell(SHUTDOWN_MESSAGE).is_none());
    Ok(())
}

/// kubectl's SYN_STREAMs for `exec` without stdin: error, stdout, stderr (1, 3, 5), with
/// DATA and a PING among them, as one deflate context (like spdystream).
fn kubectl_spdy_streams() -> anyhow::Result<Vec<u8>> {
    let mut enc = Encoder::new();
    let mut out = bytes::BytesMut::new();
    for (id, kind) in [(1, "error"), (3, "stdout"), (5, "stderr")] {
        enc.encode(
            &Frame::SynStream {
                stream_id: id,
                associated_id: 0,
                priority: 0,
                slot: 0,
                flags: 0,
                headers: Headers::new().with("streamtype", kind),
            },
            &mut out,
        )?;
        enc.encode(&Frame::Ping { id: id * 10 + 1 }, &mut out)?;
    }
    enc.encode(&Frame::data(3, vec![7u8; 1000], false), &mut out)?;
    Ok(out.to_vec())
}

fn decode_all(wire: &[u8]) -> anyhow::Result<Vec<Frame>> {
    let mut dec = Decoder::new();
    dec.feed(wire);
    let mut frames = Vec::new();
    while let Some(f) = dec.next_frame()? {
        frames.push(f);
    }
    assert_eq!(dec.buffered(), 0);
    Ok(frames)
}

#[test]
fn spdy_goodbye_writes_the_error_stream_and_ends_every_stream() -> anyhow::Result<()> {
    let mut g = spdy("v4.channel.k8s.io").ok_or_else(|| anyhow::anyhow!("no goodbye"))?;
    feed(&mut g.client, &kubectl_spdy_streams()?);
    assert_eq!(g.client.streams, [1, 3, 5]);
    assert_eq!(g.client.error_stream, Some(1));
    // The API server's replies and some stdout, split byte by byte.
    let mut enc = Encoder::new();
    let mut server = bytes::BytesMut::new();
    for id in [1, 3, 5] {
        enc.encode(
            &Frame::SynReply {
                stream_id: id,
                flags: 0,
                headers: Headers::new(),
            },
            &mut server,
        )?;
    }
    enc.encode(&Frame::data(3, b"started\n".to_vec(), false), &mut server)?;
    feed(&mut g.upstream, &server[..server.len() - 3]);
    assert!(g.farewell(SHUTDOWN_MESSAGE).is_none(), "mid-frame");
    feed(&mut g.upstream, &server[server.len() - 3..]);
    let frames = decode_all(
        &g.farewell(SHUTDOWN_MESSAGE)
            .ok_or_else(|| anyhow::anyhow!("no farewell"))?,
    )?;
    assert_eq!(frames.len(), 4, "{frames:?}");
    let Frame::Data {
        stream_id: 1,
        flags: FLAG_FIN,
        data,
    } = &frames[0]
    else {
        anyhow::bail!("first frame is not the error stream's last DATA: {frames:?}");
    };
    assert_eq!(
        status_message(data)?,
        ("Failure".into(), SHUTDOWN_MESSAGE.into())
    );
    for (frame, id) in frames[1..3].iter().zip([3, 5]) {
        assert_eq!(
            frame,
            &Frame::data(id, Vec::new(), true),
            "stream {id} is half-closed"
        );
    }
    assert_eq!(
        frames[3],
        Frame::GoAway {
            last_good_stream_id: 5,
            status: goaway_status::OK
        }
    );
    Ok(())
}

#[test]
fn spdy_before_v4_gets_the_plain_message() -> anyhow::Result<()> {
    let mut g = spdy("v3.channel.k8s.io").ok_or_else(|| anyhow::anyhow!("no goodbye"))?;
    g.client.observe(&kubectl_spdy_streams()?);
    let frames = decode_all(
        &g.farewell(SHUTDOWN_MESSAGE)
            .ok_or_else(|| anyhow::anyhow!("no farewell"))?,
    )?;
    assert_eq!(
        frames[0],
        Frame::data(1, SHUTDOWN_MESSAGE.as_bytes().to_vec(), true)
    );
    Ok(())
}

#[test]
fn spdy_without_a_known_error_stream_only_says_goaway() -> anyhow::Result<()> {
    let mut g = spdy("v4.channel.k8s.io").ok_or_else(|| anyhow::anyhow!("no goodbye"))?;
    // Not SPDY at all from the client: the client side is given up, never guessed.
    g.client.observe(&[0x80, 3, 0, 1, 0, 0xff, 0xff, 0xff]);
    assert!(g.client.lost);
    let frames = decode_all(
        &g.farewell(SHUTDOWN_MESSAGE)
            .ok_or_else(|| anyhow::anyhow!("no farewell"))?,
    )?;
    assert_eq!(
        frames,
        [Frame::GoAway {
            last_good_stream_id: 0,
            status: goaway_status::OK
        }]
    );
    Ok(())
}
