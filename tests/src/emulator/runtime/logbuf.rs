//! Per-container log: a bounded in-memory ring of timestamped lines that `pods/log` reads
//! (tail, since, limit, follow) and `attach` subscribes to live.

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::{broadcast, watch};

/// Which output a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// stdout (and a tty's combined output).
    Stdout,
    /// stderr.
    Stderr,
}

/// One captured line (with its `\n`, unless it was a partial line at exit).
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Sequence number, counting from 0 for the container.
    pub seq: u64,
    /// When the runtime read it.
    pub time: DateTime<Utc>,
    /// Source stream.
    pub stream: LogStream,
    /// Line bytes.
    pub line: Bytes,
}

impl LogEntry {
    /// kubelet's `timestamps=true` prefix: RFC 3339 with nanoseconds, then a space.
    pub fn timestamp_prefix(&self) -> String {
        format!("{} ", self.time.to_rfc3339_opts(SecondsFormat::Nanos, true))
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: VecDeque<LogEntry>,
    bytes: usize,
    next_seq: u64,
    partial: [Vec<u8>; 2],
    closed: bool,
}

/// The log of one container.
#[derive(Debug)]
pub struct LogBuffer {
    inner: Mutex<Inner>,
    max_bytes: usize,
    /// Latest sequence number + 1, bumped on every append (followers wait on it).
    tick: watch::Sender<u64>,
    /// Raw chunks for `attach` (lagging subscribers lose old chunks, as a real tty would).
    live: broadcast::Sender<(LogStream, Bytes)>,
}

impl LogBuffer {
    /// A log keeping at most `max_bytes` of lines (oldest dropped first).
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_bytes,
            tick: watch::channel(0).0,
            live: broadcast::channel(1024).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere must not take the log down with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends output read from the process, splitting it into lines.
    pub fn append(&self, stream: LogStream, chunk: &[u8]) {
        let _ = self.live.send((stream, Bytes::copy_from_slice(chunk)));
        let mut inner = self.lock();
        let idx = stream as usize;
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut inner.partial[idx]);
            line.extend_from_slice(&rest[..=pos]);
            rest = &rest[pos + 1..];
            self.push(&mut inner, stream, line);
        }
        inner.partial[idx].extend_from_slice(rest);
        let seq = inner.next_seq;
        drop(inner);
        self.tick.send_replace(seq);
    }

    fn push(&self, inner: &mut Inner, stream: LogStream, line: Vec<u8>) {
        inner.bytes += line.len();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.entries.push_back(LogEntry {
            seq,
            time: Utc::now(),
            stream,
            line: line.into(),
        });
        while inner.bytes > self.max_bytes {
            match inner.entries.pop_front() {
                Some(old) => inner.bytes -= old.line.len(),
                None => break,
            }
        }
    }

    /// Marks the container terminated: flushes partial lines and ends followers.
    pub fn close(&self) {
        let mut inner = self.lock();
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let line = std::mem::take(&mut inner.partial[stream as usize]);
            if !line.is_empty() {
                self.push(&mut inner, stream, line);
            }
        }
        inner.closed = true;
        let seq = inner.next_seq;
        drop(inner);
        self.tick.send_replace(seq);
    }

    /// Entries with `seq >= from`, and whether the log is closed.
    pub fn since_seq(&self, from: u64) -> (Vec<LogEntry>, bool) {
        let inner = self.lock();
        let out = inner
            .entries
            .iter()
            .filter(|e| e.seq >= from)
            .cloned()
            .collect();
        (out, inner.closed)
    }

    /// A receiver that changes whenever lines are appended or the log closes.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.tick.subscribe()
    }

    /// Live raw output for attach.
    pub fn subscribe(&self) -> broadcast::Receiver<(LogStream, Bytes)> {
        self.live.subscribe()
    }

    /// True once the container terminated.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_keeps_partials_until_close() {
        let log = LogBuffer::new(1024);
        log.append(LogStream::Stdout, b"a\nb");
        log.append(LogStream::Stdout, b"c\nd");
        let (entries, closed) = log.since_seq(0);
        let lines: Vec<_> = entries.iter().map(|e| e.line.clone()).collect();
        assert_eq!(lines, [&b"a\n"[..], &b"bc\n"[..]]);
        assert!(!closed);
        log.close();
        let (entries, closed) = log.since_seq(2);
        assert_eq!(entries[0].line, &b"d"[..]);
        assert!(closed);
    }

    #[test]
    fn drops_oldest_past_the_bound() {
        let log = LogBuffer::new(4);
        log.append(LogStream::Stderr, b"12\n34\n56\n");
        let (entries, _) = log.since_seq(0);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].seq, 2);
    }
}
