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
