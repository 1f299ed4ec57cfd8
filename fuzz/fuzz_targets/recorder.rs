//! Fuzzes the whole recorder (wire parser, remotecommand streams, asciicast writer) as a
//! `StreamTap`, for each negotiated protocol.
#![no_main]

use gatehouse_agent::audit::sink::AuditSink;
use gatehouse_agent::record::Recording;
use gatehouse_common::audit::{AuditEvent, SessionEndEvent, SessionKind};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

struct Drop;
impl AuditSink for Drop {
    fn emit(&self, _event: &AuditEvent) {}
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    let (upgrade, protocol) = match control % 4 {
        0 => ("websocket", "v5.channel.k8s.io"),
        1 => ("websocket", "v4.base64.channel.k8s.io"),
        2 => ("websocket", "SPDY/3.1+portforward.k8s.io"),
        _ => ("SPDY/3.1", "v4.channel.k8s.io"),
    };
    headers.insert("upgrade", http::HeaderValue::from_static(upgrade));
    headers.insert(
        "sec-websocket-protocol",
        http::HeaderValue::from_static(protocol),
    );
    let template = SessionEndEvent {
        kind: if control & 0x10 != 0 {
            SessionKind::PortForward
        } else {
            SessionKind::Exec
        },
        ..SessionEndEvent::default()
    };
    let mut tap = Recording::new(Arc::new(Drop), None).tap(&template, None);
    if tap.upgraded(&headers).is_err() {
        return;
    }
    for (i, piece) in rest.chunks(usize::from(control >> 5) + 1).enumerate() {
        let r = if i % 2 == 0 {
            tap.client_to_upstream(piece)
        } else {
            tap.upstream_to_client(piece)
        };
        if r.is_err() {
            break;
        }
    }
    let mut end = template.clone();
    end.end_reason = "closed".into();
    tap.finish(&mut end);
});
