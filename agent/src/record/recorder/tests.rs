//! Recorder tests: real frames of each wire in, asciicast and session fields out; and the
//! deterministic randomised run of the parsers over random bytes and random splits.

use super::*;
use crate::record::websocket::encode_frame;
use gatehouse_common::audit::ExecParams;
use gatehouse_common::mask::text::TextDetectors;
use gatehouse_common::spdy::{Encoder, Frame, Headers};
use std::sync::Mutex;

#[derive(Default)]
struct Collect(Mutex<Vec<AuditEvent>>);
impl AuditSink for Collect {
    fn emit(&self, event: &AuditEvent) {
        if let Ok(mut v) = self.0.lock() {
            v.push(event.clone());
        }
    }
}

fn template(kind: SessionKind) -> SessionEndEvent {
    SessionEndEvent {
        session_id: "s1".into(),
        user: "alice".into(),
        namespace: "dev".into(),
        pod: "web-0".into(),
        kind,
        exec: Some(ExecParams {
            command: vec!["sh".into()],
            tty: true,
            stdin: true,
            container: "app".into(),
        }),
        ..SessionEndEvent::default()
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        if let (Ok(k), Ok(v)) = (
            http::header::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            h.insert(k, v);
        }
    }
    h
}

fn ws_headers(protocol: &str) -> HeaderMap {
    headers(&[
        ("upgrade", "websocket"),
        ("sec-websocket-protocol", protocol),
    ])
}

/// The .cast text of the chunks in `events`, by seq.
fn cast(events: &[AuditEvent]) -> Vec<serde_json::Value> {
    let mut chunks: Vec<&SessionChunkEvent> = events
        .iter()
        .filter_map(|e| match e {
            AuditEvent::SessionChunk(c) => Some(c),
            _ => None,
        })
        .collect();
    chunks.sort_by_key(|c| c.seq);
    chunks
        .iter()
        .flat_map(|c| c.data.lines())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn text_of(lines: &[serde_json::Value], code: &str) -> String {
    lines[1..]
        .iter()
        .filter(|e| e[1] == code)
        .filter_map(|e| e[2].as_str())
        .collect()
}

#[test]
fn websocket_v5_exec_is_recorded_with_resize_stdin_output_and_exit_code() {
    let sink = Arc::new(Collect::default());
    let mut r = Recorder::new(
        &template(SessionKind::Exec),
        sink.clone(),
        None,
        TextDetectors::shared_builtin(),
    );
    assert!(r.upgraded(&ws_headers("v5.channel.k8s.io")).is_ok());
    let key = Some([9, 8, 7, 6]);
    let mut c2u = Vec::new();
    let mut resize = vec![4u8];
    resize.extend_from_slice(br#"{"Width":120,"Height":40}"#);
    encode_frame(&mut c2u, true, 2, key, &resize);
    encode_frame(&mut c2u, true, 2, key, b"\x00echo hi\r");
    encode_frame(&mut c2u, true, 2, key, &[255, 0]);
    let mut u2c = Vec::new();
    encode_frame(&mut u2c, true, 2, None, b"\x01hi\r\n");
    encode_frame(&mut u2c, true, 2, None, b"\x02warn");
    let mut status = vec![3u8];
    status.extend_from_slice(br#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}}"#);
    encode_frame(&mut u2c, true, 2, None, &status);
    encode_frame(&mut u2c, true, 8, None, &1000u16.to_be_bytes());
    for piece in c2u.chunks(5) {
        assert!(r.client_to_upstream(piece).is_ok());
    }
    for piece in u2c.chunks(3) {
        assert!(r.upstream_to_client(piece).is_ok());
    }
    let mut end = template(SessionKind::Exec);
    end.end_reason = "closed".into();
    r.finish(&mut end);
    assert_eq!(end.exit_code, Some(7));
    assert_eq!(end.terminal, "120x40");
    assert_eq!(end.stdin_bytes, 8);
    assert_eq!(end.output_bytes, 8);
    assert_eq!(end.end_reason, "closed");
    let events = sink.0.lock().map(|v| v.clone()).unwrap_or_default();
    assert_eq!(end.recording_chunks, events.len() as u64);
    let lines = cast(&events);
    assert_eq!(lines[0]["width"], 120);
    assert_eq!(lines[0]["gatehouse"]["container"], "app");
    assert_eq!(text_of(&lines, "i"), "echo hi\r");
    assert_eq!(text_of(&lines, "o"), "hi\r\nwarn");
    assert_eq!(text_of(&lines, "r"), "120x40");
}

#[test]
fn spdy_exec_and_port_forward_are_recorded() {
    let mut client = Encoder::new();
    let mut server = Encoder::new();
    let syn = |enc: &mut Encoder, id: u32, h: Headers| {
        enc.encode_to_bytes(&Frame::SynStream {
            stream_id: id,
            associated_id: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers: h,
        })
        .map(|b| b.to_vec())
        .unwrap_or_default()
    };
    let data = |enc: &mut Encoder, id: u32, d: &[u8], fin: bool| {
        enc.encode_to_bytes(&Frame::data(id, d.to_vec(), fin))
            .map(|b| b.to_vec())
            .unwrap_or_default()
    };
    let sink = Arc::new(Collect::default());
    let mut r = Recorder::new(
        &template(SessionKind::Exec),
        sink.clone(),
        None,
        TextDetectors::shared_builtin(),
    );
    let spdy = headers(&[
        ("upgrade", "SPDY/3.1"),
        ("x-stream-protocol-version", "v4.channel.k8s.io"),
    ]);
    assert!(r.upgraded(&spdy).is_ok());
    let mut c2u = syn(&mut client, 1, Headers::new().with("streamtype", "error"));
    c2u.extend(syn(
        &mut client,
        3,
        Headers::new().with("streamtype", "stdin"),
    ));
    c2u.extend(syn(
        &mut client,
        5,
        Headers::new().with("streamtype", "stdout"),
    ));
    c2u.extend(data(&mut client, 3, b"cat\n", true));
    assert!(r.client_to_upstream(&c2u).is_ok());
    let mut u2c = data(&mut server, 5, b"out", true);
    u2c.extend(data(&mut server, 1, br#"{"status":"Success"}"#, true));
    assert!(r.upstream_to_client(&u2c).is_ok());
    let mut end = template(SessionKind::Exec);
    r.finish(&mut end);
    assert_eq!(end.exit_code, Some(0));
    let lines = cast(&sink.0.lock().map(|v| v.clone()).unwrap_or_default());
    assert_eq!(text_of(&lines, "i"), "cat\n");
    assert_eq!(text_of(&lines, "o"), "out");

    // Port-forward tunnelled in WebSocket: metadata only, no chunks.
    let sink = Arc::new(Collect::default());
    let mut r = Recorder::new(
        &template(SessionKind::PortForward),
        sink.clone(),
        None,
        TextDetectors::shared_builtin(),
    );
    assert!(
        r.upgraded(&ws_headers("SPDY/3.1+portforward.k8s.io"))
            .is_ok()
    );
    let mut client = Encoder::new();
    let mut spdy_bytes = syn(
        &mut client,
        1,
        Headers::new()
            .with("streamtype", "error")
            .with("port", "8080"),
    );
    spdy_bytes.extend(syn(
        &mut client,
        3,
        Headers::new()
            .with("streamtype", "data")
            .with("port", "8080"),
    ));
    spdy_bytes.extend(data(&mut client, 3, b"GET / HTTP/1.1\r\n\r\n", false));
    let mut ws = Vec::new();
    // SPDY bytes cut at arbitrary points into binary messages.
    for piece in spdy_bytes.chunks(7) {
        encode_frame(&mut ws, true, 2, Some([1, 2, 3, 4]), piece);
    }
    assert!(r.client_to_upstream(&ws).is_ok());
    let mut end = template(SessionKind::PortForward);
    r.finish(&mut end);
    assert_eq!(end.ports.len(), 1);
    assert_eq!(end.ports[0].port, 8080);
    assert_eq!(end.ports[0].connections, 1);
    assert_eq!(end.ports[0].bytes_from_client, 18);
    assert!(sink.0.lock().map(|v| v.is_empty()).unwrap_or(false));
}

#[test]
fn unrecordable_protocols_are_refused_and_truncation_is_reported() {
    let sink: Arc<dyn AuditSink> = Arc::new(Collect::default());
    let mut r = Recorder::new(
        &template(SessionKind::Exec),
        sink.clone(),
        None,
        TextDetectors::shared_builtin(),
    );
    assert!(r.upgraded(&ws_headers("chat.example")).is_err());
    let mut ext = ws_headers("v5.channel.k8s.io");
    ext.insert(
        "sec-websocket-extensions",
        http::HeaderValue::from_static("permessage-deflate"),
    );
    assert!(r.upgraded(&ext).is_err());
    assert!(r.upgraded(&headers(&[("upgrade", "h2c")])).is_err());
    // Bytes before a successful upgrade call fail closed.
    assert!(r.client_to_upstream(b"x").is_err());

    let mut r = Recorder::new(
        &template(SessionKind::Exec),
        sink,
        None,
        TextDetectors::shared_builtin(),
    );
    assert!(r.upgraded(&ws_headers("v4.channel.k8s.io")).is_ok());
    assert!(r.upstream_to_client(&[0x82, 10, 1, b'a']).is_ok());
    let mut end = template(SessionKind::Exec);
    end.end_reason = "closed".into();
    r.finish(&mut end);
    assert_eq!(end.end_reason, "tap: stream ended inside a frame");
}

/// A small deterministic PRNG (xorshift), so CI runs the same cases without a fuzzer.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Random bytes and mutated valid streams, in random splits, through every wire: no
/// panic, and a parser that failed keeps failing (never resynchronises on garbage).
#[test]
fn randomised_streams_never_panic_and_errors_stick() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let protocols: [HeaderMap; 4] = [
        ws_headers("v5.channel.k8s.io"),
        ws_headers("v4.base64.channel.k8s.io"),
        ws_headers("SPDY/3.1+portforward.k8s.io"),
        headers(&[("upgrade", "SPDY/3.1")]),
    ];
    // A valid stream of each kind, to mutate.
    let mut valid_ws = Vec::new();
    encode_frame(&mut valid_ws, false, 2, Some([1, 2, 3, 4]), b"\x00ab");
    encode_frame(&mut valid_ws, true, 0, Some([5, 6, 7, 8]), b"cd");
    encode_frame(&mut valid_ws, true, 9, Some([0, 0, 0, 0]), b"");
    let mut client = Encoder::new();
    let mut valid_spdy = client
        .encode_to_bytes(&Frame::SynStream {
            stream_id: 1,
            associated_id: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers: Headers::new().with("streamtype", "stdin"),
        })
        .map(|b| b.to_vec())
        .unwrap_or_default();
    valid_spdy.extend(
        client
            .encode_to_bytes(&Frame::data(1, b"hello".to_vec(), false))
            .map(|b| b.to_vec())
            .unwrap_or_default(),
    );
    for case in 0..3000 {
        let proto = &protocols[case % protocols.len()];
        let kind = if case % 3 == 0 {
            SessionKind::PortForward
        } else {
            SessionKind::Exec
        };
        let sink: Arc<dyn AuditSink> = Arc::new(Collect::default());
        let mut r = Recorder::new(&template(kind), sink, None, TextDetectors::shared_builtin());
        if r.upgraded(proto).is_err() {
            continue;
        }
        let mut stream = match rng.below(3) {
            0 => (0..rng.below(400))
                .map(|_| rng.next() as u8)
                .collect::<Vec<u8>>(),
            1 => valid_ws.clone(),
            _ => valid_spdy.clone(),
        };
        for _ in 0..rng.below(4) {
            if !stream.is_empty() {
                let i = rng.below(stream.len());
                stream[i] = rng.next() as u8;
            }
        }
        let mut failed = false;
        let mut rest: &[u8] = &stream;
        while !rest.is_empty() {
            let n = 1 + rng.below(rest.len());
            let (piece, tail) = rest.split_at(n);
            rest = tail;
            let result = if rng.below(2) == 0 {
                r.client_to_upstream(piece)
            } else {
                r.upstream_to_client(piece)
            };
            if failed {
                assert!(
                    result.is_err(),
                    "case {case}: resynchronised after an error"
                );
            }
            failed |= result.is_err();
        }
        let mut end = template(kind);
        end.end_reason = "closed".into();
        r.finish(&mut end);
    }
}
