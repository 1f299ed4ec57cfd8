//! Where audit events go: the [`AuditSink`] trait and a fan-out over several sinks.
//!
//! Sinks must not block the request path: `emit` hands the event over (to a channel, a
//! buffered writer, counters) and returns. The durable spool of the collector issue is one
//! more implementation of this trait.

use gatehouse_common::audit::AuditEvent;
use std::sync::Arc;

/// Receives every audit event the agent produces.
pub trait AuditSink: Send + Sync + 'static {
    /// Takes one event; must return quickly and never panic.
    fn emit(&self, event: &AuditEvent);
}

/// Sends each event to every sink in order (e.g. the local log, metrics, the spool).
#[derive(Clone, Default)]
pub struct FanOut {
    sinks: Vec<Arc<dyn AuditSink>>,
}

impl FanOut {
    /// An empty fan-out (drops events until sinks are added).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sink.
    pub fn with(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.sinks.push(sink);
        self
    }
}

impl AuditSink for FanOut {
    fn emit(&self, event: &AuditEvent) {
        for sink in &self.sinks {
            sink.emit(event);
        }
    }
}

/// Writes each event as one JSON line to the `gatehouse::audit` tracing target (the
/// default when no `--audit-log` is given).
pub struct TracingSink;

impl AuditSink for TracingSink {
    fn emit(&self, event: &AuditEvent) {
        // Serialising is most of this sink's cost per request: skip it when the target is
        // filtered out (e.g. `RUST_LOG=info,gatehouse::audit=off` once the spool ships events).
        if !tracing::enabled!(target: "gatehouse::audit", tracing::Level::INFO) {
            return;
        }
        match serde_json::to_string(event) {
            Ok(json) => tracing::info!(target: "gatehouse::audit", event = %json, "audit"),
            Err(err) => tracing::warn!(error = %err, "audit event not serialisable"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_common::audit::ApiRequestEvent;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Collect(Mutex<Vec<String>>);
    impl AuditSink for Collect {
        fn emit(&self, event: &AuditEvent) {
            if let Ok(mut seen) = self.0.lock() {
                seen.push(event.event_id().to_string());
            }
        }
    }

    /// A log writer into memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut out) = self.0.lock() {
                out.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged_with(filter: &str) -> String {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            TracingSink.emit(&AuditEvent::ApiRequest(ApiRequestEvent {
                event_id: "ev-1".into(),
                ..ApiRequestEvent::default()
            }));
        });
        let bytes = lines.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn tracing_sink_logs_the_event_unless_its_target_is_off() {
        let on = logged_with("info");
        assert!(
            on.contains("gatehouse::audit") && on.contains("ev-1"),
            "{on}"
        );
        assert_eq!(logged_with("info,gatehouse::audit=off"), "");
    }

    #[test]
    fn fan_out_reaches_every_sink() {
        let (a, b) = (Arc::new(Collect::default()), Arc::new(Collect::default()));
        let fan = FanOut::new().with(a.clone()).with(b.clone());
        fan.emit(&AuditEvent::ApiRequest(ApiRequestEvent {
            event_id: "x".into(),
            ..ApiRequestEvent::default()
        }));
        for sink in [a, b] {
            let seen = sink.0.lock().map(|s| s.clone()).unwrap_or_default();
            assert_eq!(seen, vec!["x".to_string()]);
        }
    }
}
