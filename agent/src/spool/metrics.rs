//! Prometheus metrics of the spool (`gatehouse_agent_spool_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Why an event was dropped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropReason {
    /// `spool_full`, `queue_full`, `too_large`, `io_error`, `stopped`, `unserialisable`.
    pub reason: String,
}

/// The spool's metrics; cheap to clone (they share their values).
#[derive(Clone)]
pub struct SpoolMetrics {
    /// Bytes of segment files on disk.
    pub bytes: Gauge,
    /// Records on disk not yet acked by the collector.
    pub pending: Gauge,
    /// Records appended since start.
    pub appended: Counter,
    /// Events lost, by reason (the loud one of keep-serving).
    pub dropped: Family<DropReason, Counter>,
    /// Corrupt or torn records found (each skips the rest of its segment).
    pub corrupt: Counter,
    /// Duration of each batched fsync, seconds.
    pub fsync: Histogram,
    /// 1 while the spool refuses new events (full or broken).
    pub full: Gauge,
}

impl Default for SpoolMetrics {
    fn default() -> Self {
        Self {
            bytes: Gauge::default(),
            pending: Gauge::default(),
            appended: Counter::default(),
            dropped: Family::default(),
            corrupt: Counter::default(),
            fsync: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.000_05, 2.0, 16,
            )),
            full: Gauge::default(),
        }
    }
}

impl SpoolMetrics {
    /// Registers every metric under `spool_` in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        // Present at 0 from the start, so alerts on the loud one need no absent() dance.
        for reason in [
            "spool_full",
            "queue_full",
            "io_error",
            "too_large",
            "stopped",
            "unserialisable",
        ] {
            let _ = self.dropped.get_or_create(&DropReason {
                reason: reason.to_string(),
            });
        }
        registry.register(
            "spool_bytes",
            "Bytes of audit spool segment files on disk",
            self.bytes.clone(),
        );
        registry.register(
            "spool_pending_records",
            "Spooled audit events not yet acknowledged by the collector",
            self.pending.clone(),
        );
        registry.register(
            "spool_appended_records",
            "Audit events appended to the spool",
            self.appended.clone(),
        );
        registry.register(
            "spool_dropped_events",
            "Audit events NOT recorded, by reason (spool full, queue full, disk error, ...)",
            self.dropped.clone(),
        );
        registry.register(
            "spool_corrupt_records",
            "Corrupt or torn spool records found and skipped",
            self.corrupt.clone(),
        );
        registry.register(
            "spool_fsync_seconds",
            "Duration of the spool's batched fsyncs",
            self.fsync.clone(),
        );
        registry.register(
            "spool_full",
            "1 while the spool refuses new events",
            self.full.clone(),
        );
    }

    /// Counts one dropped event.
    pub fn drop_event(&self, reason: &str) {
        self.dropped
            .get_or_create(&DropReason {
                reason: reason.to_string(),
            })
            .inc();
    }
}
