//! `pods/log`: the captured log as text/plain, with tailLines, sinceSeconds, limitBytes
//! and timestamps; `follow=true` streams chunked, one flush per line, until the container
//! terminates or the client goes away. With a chunk size set (tests of maskers), lines
//! are sent in frames of that size, both with and without `follow`.

use super::query::StreamQuery;
use crate::emulator::Body;
use crate::emulator::runtime::{LogBuffer, LogEntry};
use crate::emulator::status::ApiError;
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use std::sync::Arc;

/// Serves the log of one container; `chunk_bytes` > 0 splits lines into frames that size.
pub fn serve(
    log: Arc<LogBuffer>,
    q: &StreamQuery,
    pod: &str,
    container: &str,
    chunk_bytes: usize,
) -> Response<Body> {
    if q.previous {
        return ApiError::bad_request(format!(
            "previous terminated container \"{container}\" in pod \"{pod}\" not found"
        ))
        .into_response();
    }
    let (entries, _) = log.since_seq(0);
    let cutoff = q
        .since_seconds
        .map(|s| chrono::Utc::now() - chrono::Duration::seconds(s.min(i64::MAX as u64) as i64));
    let mut entries: Vec<LogEntry> = entries
        .into_iter()
        .filter(|e| cutoff.is_none_or(|c| e.time >= c))
        .collect();
    if let Some(n) = q.tail_lines {
        let skip = entries.len().saturating_sub(n);
        entries.drain(..skip);
    }
    let next_seq = entries
        .last()
        .map(|e| e.seq + 1)
        .unwrap_or_else(|| log.since_seq(0).0.last().map(|e| e.seq + 1).unwrap_or(0));
    let mut budget = q.limit_bytes.unwrap_or(usize::MAX);
    let timestamps = q.timestamps;
    let render = move |e: &LogEntry, budget: &mut usize| -> Option<Bytes> {
        if *budget == 0 {
            return None;
        }
        let mut line = Vec::with_capacity(e.line.len() + 32);
        if timestamps {
            line.extend_from_slice(e.timestamp_prefix().as_bytes());
        }
        line.extend_from_slice(&e.line);
        line.truncate(*budget);
        *budget -= line.len();
        Some(line.into())
    };

    if !q.follow && chunk_bytes == 0 {
        let mut body = Vec::new();
        for e in &entries {
            match render(e, &mut budget) {
                Some(b) => body.extend_from_slice(&b),
                None => break,
            }
        }
        return text(crate::emulator::full_body(body));
    }

    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(64);
    let follow = q.follow;
    tokio::spawn(async move {
        let send = |b: Bytes| {
            let tx = tx.clone();
            async move {
                let size = if chunk_bytes == 0 {
                    b.len().max(1)
                } else {
                    chunk_bytes
                };
                for (i, piece) in b.chunks(size).enumerate() {
                    // Apart in time too, so the pieces reach the client as separate reads.
                    if chunk_bytes > 0 && i > 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                    let frame = Frame::data(Bytes::copy_from_slice(piece));
                    if tx.send(Ok(frame)).await.is_err() {
                        return false;
                    }
                }
                true
            }
        };
        for e in &entries {
            let Some(b) = render(e, &mut budget) else {
                return;
            };
            if !send(b).await {
                return;
            }
        }
        if !follow {
            return;
        }
        let mut next = next_seq;
        let mut tick = log.watch();
        loop {
            let (new, closed) = log.since_seq(next);
            for e in &new {
                next = e.seq + 1;
                let Some(b) = render(e, &mut budget) else {
                    return;
                };
                if !send(b).await {
                    return;
                }
            }
            if closed && new.is_empty() {
                return;
            }
            tokio::select! {
                changed = tick.changed() => if changed.is_err() { return; },
                // The client went away: stop following.
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    text(StreamBody::new(stream).boxed())
}

fn text(body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    resp
}
