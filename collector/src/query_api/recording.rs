//! Reassembles a session's asciicast v2 file from its stored chunks, in `seq` order.
//! A missing chunk becomes a visible gap marker in the output (and an asciicast `m`
//! marker), never silence; a missing header is replaced by one that says so.

use gatehouse_common::audit::{SessionChunkEvent, SessionEndEvent};
use std::fmt::Write as _;

/// The media type of the result.
pub const CONTENT_TYPE: &str = "application/x-asciicast";

/// The text of a gap marker for chunk `seq` (what a replay shows).
pub fn gap_text(first: u64, last: u64) -> String {
    if first == last {
        format!("\r\n[gatehouse: recording gap: chunk {first} is missing]\r\n")
    } else {
        format!("\r\n[gatehouse: recording gap: chunks {first}-{last} are missing]\r\n")
    }
}

/// The time of the last event line in `text` (0 if none).
fn last_time(text: &str) -> f64 {
    text.lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get(0).and_then(serde_json::Value::as_f64))
        })
        .unwrap_or(0.0)
}

fn push_gap(out: &mut String, first: u64, last: u64) {
    let t = last_time(out);
    let text = gap_text(first, last);
    let _ = writeln!(out, "{}", serde_json::json!([t, "m", text.trim()]));
    let _ = writeln!(out, "{}", serde_json::json!([t, "o", text]));
}

/// The `.cast` text of `chunks` (any order, repeats allowed); `session`, when stored, says
/// how many chunks there should be, so lost trailing chunks show as a gap too. `None`
/// when there is nothing to assemble.
pub fn assemble(
    mut chunks: Vec<SessionChunkEvent>,
    session: Option<&SessionEndEvent>,
) -> Option<String> {
    chunks.sort_by_key(|c| c.seq);
    chunks.dedup_by_key(|c| c.seq);
    if chunks.is_empty() {
        return None;
    }
    let mut out = String::new();
    let mut next = 0u64;
    for chunk in &chunks {
        if next == 0 && chunk.seq != 0 {
            let header = serde_json::json!({
                "version": 2, "width": 80, "height": 24,
                "title": "recording header missing",
                "gatehouse": {"session_id": chunk.session_id, "header_missing": true},
            });
            let _ = writeln!(out, "{header}");
            next = 1;
        }
        if chunk.seq > next {
            push_gap(&mut out, next, chunk.seq - 1);
        }
        out.push_str(&chunk.data);
        if !chunk.data.is_empty() && !chunk.data.ends_with('\n') {
            out.push('\n');
        }
        next = chunk.seq + 1;
    }
    if let Some(expected) = session.map(|s| s.recording_chunks)
        && expected > next
    {
        push_gap(&mut out, next, expected - 1);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seq: u64, data: &str) -> SessionChunkEvent {
        SessionChunkEvent {
            event_id: format!("e{seq}"),
            session_id: "s".into(),
            seq,
            data: data.into(),
            ..SessionChunkEvent::default()
        }
    }

    #[test]
    fn chunks_join_in_order_and_gaps_are_marked() {
        let header = "{\"version\":2}\n";
        let c1 = "[0.5,\"o\",\"a\"]\n";
        let c3 = "[2.0,\"o\",\"c\"]\n";
        let got = assemble(
            vec![chunk(3, c3), chunk(0, header), chunk(1, c1), chunk(1, c1)],
            None,
        )
        .unwrap_or_default();
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines[0], header.trim());
        assert_eq!(lines[1], c1.trim());
        assert!(lines[2].contains("\"m\"") && lines[2].contains("chunk 2 is missing"));
        assert!(lines[3].starts_with("[0.5,\"o\"") && lines[3].contains("chunk 2 is missing"));
        assert_eq!(lines[4], c3.trim());

        let end = SessionEndEvent {
            recording_chunks: 6,
            ..SessionEndEvent::default()
        };
        let got = assemble(vec![chunk(1, c1)], Some(&end)).unwrap_or_default();
        assert!(got.lines().next().unwrap_or("").contains("header_missing"));
        assert!(got.contains("chunks 2-5 are missing"), "{got}");
        assert_eq!(assemble(Vec::new(), Some(&end)), None);
    }
}
