//! The JSON-lines audit sink: one event per line to a file or stdout, written by a
//! background task so the request path never waits for the disk.

use super::sink::AuditSink;
use gatehouse_common::audit::AuditEvent;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

/// Events waiting for the writer; beyond this they are dropped (and counted), because a
/// stalled disk must not stall kubectl.
pub const QUEUE_CAPACITY: usize = 8192;

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Standard output (`--audit-log -`).
    Stdout,
    /// Append to this file.
    File(PathBuf),
}

impl Target {
    /// `-` is stdout, anything else a file path.
    pub fn parse(arg: &str) -> Self {
        if arg == "-" {
            Self::Stdout
        } else {
            Self::File(PathBuf::from(arg))
        }
    }
}

/// Sends serialised events to the writer task.
pub struct JsonLinesSink {
    tx: mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
}

impl JsonLinesSink {
    /// Opens `target` and starts the writer task; the task ends (flushing) once the sink
    /// and every clone of it are dropped.
    /// Must be called inside a Tokio runtime; opening is synchronous so that startup
    /// fails at once on a bad path.
    pub fn start(target: Target) -> std::io::Result<(Self, tokio::task::JoinHandle<()>)> {
        let writer: Box<dyn AsyncWrite + Send + Unpin> = match &target {
            Target::Stdout => Box::new(tokio::io::stdout()),
            Target::File(path) => Box::new(tokio::fs::File::from_std(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
        };
        Ok(Self::with_writer(writer))
    }

    /// A sink writing to any writer (tests use an in-memory pipe).
    pub fn with_writer(
        writer: Box<dyn AsyncWrite + Send + Unpin>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(write_lines(rx, BufWriter::new(writer)));
        let sink = Self {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (sink, task)
    }

    /// Events dropped because the queue was full or the writer had stopped.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl AuditSink for JsonLinesSink {
    fn emit(&self, event: &AuditEvent) {
        let line = match serde_json::to_string(event) {
            Ok(line) => line,
            Err(err) => {
                tracing::warn!(error = %err, "audit event not serialisable; dropped");
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if self.tx.try_send(line).is_err() {
            let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Warn on the first drop and then sparsely, so a full disk cannot flood the log.
            if total.is_power_of_two() {
                tracing::warn!(
                    dropped_total = total,
                    "audit log queue full; events dropped"
                );
            }
        }
    }
}

async fn write_lines(
    mut rx: mpsc::Receiver<String>,
    mut out: BufWriter<Box<dyn AsyncWrite + Send + Unpin>>,
) {
    while let Some(line) = rx.recv().await {
        let mut result = write_line(&mut out, &line).await;
        // Drain what is already queued before flushing: one flush per burst, not per line.
        while result.is_ok() {
            match rx.try_recv() {
                Ok(line) => result = write_line(&mut out, &line).await,
                Err(_) => break,
            }
        }
        if let Err(err) = result.and(out.flush().await) {
            tracing::error!(error = %err, "writing the audit log failed");
        }
    }
    if let Err(err) = out.flush().await {
        tracing::error!(error = %err, "flushing the audit log failed");
    }
}

async fn write_line(
    out: &mut BufWriter<Box<dyn AsyncWrite + Send + Unpin>>,
    line: &str,
) -> std::io::Result<()> {
    out.write_all(line.as_bytes()).await?;
    out.write_all(b"\n").await
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_common::audit::ApiRequestEvent;

    fn event(id: &str) -> AuditEvent {
        AuditEvent::ApiRequest(ApiRequestEvent {
            event_id: id.into(),
            verb: "get".into(),
            ..ApiRequestEvent::default()
        })
    }

    #[tokio::test]
    async fn writes_one_line_per_event_to_a_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("audit.jsonl");
        let (sink, task) = JsonLinesSink::start(Target::File(path.clone()))?;
        for id in ["a", "b", "c"] {
            sink.emit(&event(id));
        }
        drop(sink);
        tokio::time::timeout(std::time::Duration::from_secs(10), task).await??;
        let text = std::fs::read_to_string(&path)?;
        let ids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<AuditEvent>(l).map(|e| e.event_id().to_string()))
            .collect::<Result<_, _>>()?;
        assert_eq!(ids, ["a", "b", "c"]);
        Ok(())
    }

    #[tokio::test]
    async fn a_stalled_writer_drops_and_counts_instead_of_blocking() -> anyhow::Result<()> {
        // A pipe nobody reads: the writer blocks once its buffer is full.
        let (_reader, writer) = tokio::io::duplex(64);
        let (sink, task) = JsonLinesSink::with_writer(Box::new(writer));
        let total = QUEUE_CAPACITY as u64 * 2 + 100;
        for i in 0..total {
            sink.emit(&event(&i.to_string()));
        }
        assert!(sink.dropped() > 0, "a full queue must drop");
        assert!(
            sink.dropped() < total,
            "queued events must not count as dropped"
        );
        task.abort();
        Ok(())
    }

    #[test]
    fn dash_means_stdout() {
        assert_eq!(Target::parse("-"), Target::Stdout);
        assert_eq!(Target::parse("/tmp/a"), Target::File("/tmp/a".into()));
    }
}
