//! Prometheus metrics of the shipper (`gatehouse_agent_ship_*`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The shipper's metrics; cheap to clone (they share their values).
#[derive(Clone, Default)]
pub struct ShipMetrics {
    /// Events sent to the collector (re-sends count again).
    pub shipped: Counter,
    /// Events the collector acked as committed.
    pub acked: Counter,
    /// Batches sent and not yet acked.
    pub in_flight: Gauge,
    /// Connection attempts after a failure.
    pub reconnects: Counter,
    /// 1 while a stream to the collector is open.
    pub connected: Gauge,
    /// Unix time of the last committed ack (lag = now - this, while records are pending).
    pub last_ack: Gauge,
}

impl ShipMetrics {
    /// Registers every metric under `ship_` in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ship_shipped_events",
            "Audit events sent to the collector (re-sends included)",
            self.shipped.clone(),
        );
        registry.register(
            "ship_acked_events",
            "Audit events the collector committed",
            self.acked.clone(),
        );
        registry.register(
            "ship_in_flight_batches",
            "Batches sent to the collector and not yet acked",
            self.in_flight.clone(),
        );
        registry.register(
            "ship_reconnects",
            "Reconnections to the collector after a failure",
            self.reconnects.clone(),
        );
        registry.register(
            "ship_connected",
            "1 while an ingest stream to the collector is open",
            self.connected.clone(),
        );
        registry.register(
            "ship_last_ack_timestamp_seconds",
            "Unix time of the collector's last committed ack (shipping lag = now - this while events are pending)",
            self.last_ack.clone(),
        );
    }
}
