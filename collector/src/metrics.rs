//! The collector's metric families, registered under the `gatehouse_collector` prefix on a
//! registry the caller owns (no global registry).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of one HTTP request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route (`/healthz`, `/readyz`, `/metrics`, or `other`, to bound cardinality).
    pub route: String,
    /// HTTP status code.
    pub code: u16,
}

/// Labels of the build info gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// Crate version.
    pub version: String,
}

/// Metrics of the HTTP server.
#[derive(Debug, Clone, Default)]
pub struct ServerMetrics {
    /// Requests served, by route and code.
    pub requests: Family<RequestLabels, Counter>,
    /// Always 1, labelled with the version.
    pub build_info: Family<BuildLabels, Gauge>,
}

impl ServerMetrics {
    /// Creates the families and registers them under `gatehouse_collector` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let sub = registry.sub_registry_with_prefix("gatehouse_collector");
        sub.register(
            "http_requests",
            "HTTP requests served, by route and status code",
            metrics.requests.clone(),
        );
        sub.register(
            "build_info",
            "Collector build information",
            metrics.build_info.clone(),
        );
        metrics
            .build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        metrics
    }
}

/// Metrics of the ingest endpoint and the audit store behind it.
#[derive(Debug, Clone)]
pub struct IngestMetrics {
    /// Ingest streams opened by authenticated agents.
    pub streams: Counter,
    /// Requests refused for lack of a valid agent credential.
    pub unauthenticated: Counter,
    /// Streams closed for a bad frame, seq or agent name.
    pub protocol_errors: Counter,
    /// Batches received.
    pub batches: Counter,
    /// Events received.
    pub events: Counter,
    /// Events that became new rows.
    pub inserted: Counter,
    /// Events already stored (re-sent), not written again.
    pub duplicates: Counter,
    /// Batches the store could not commit (acked `committed:false`).
    pub store_errors: Counter,
    /// Seconds from a batch's arrival at the store to its commit.
    pub commit_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl IngestMetrics {
    /// Creates the families and registers them under `gatehouse_collector_ingest`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            streams: Counter::default(),
            unauthenticated: Counter::default(),
            protocol_errors: Counter::default(),
            batches: Counter::default(),
            events: Counter::default(),
            inserted: Counter::default(),
            duplicates: Counter::default(),
            store_errors: Counter::default(),
            commit_seconds: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.000_5, 2.0, 16),
            ),
        };
        let sub = registry.sub_registry_with_prefix("gatehouse_collector_ingest");
        sub.register(
            "streams",
            "Ingest streams opened by authenticated agents",
            metrics.streams.clone(),
        );
        sub.register(
            "unauthenticated",
            "Ingest requests refused for lack of a valid agent credential",
            metrics.unauthenticated.clone(),
        );
        sub.register(
            "protocol_errors",
            "Ingest streams closed for a bad frame, sequence number or agent name",
            metrics.protocol_errors.clone(),
        );
        sub.register("batches", "Batches received", metrics.batches.clone());
        sub.register("events", "Events received", metrics.events.clone());
        sub.register(
            "inserted",
            "Events stored as new rows",
            metrics.inserted.clone(),
        );
        sub.register(
            "duplicates",
            "Events already stored (re-sent batches), not written again",
            metrics.duplicates.clone(),
        );
        sub.register(
            "store_errors",
            "Batches the store could not commit (acked committed=false)",
            metrics.store_errors.clone(),
        );
        sub.register(
            "commit_seconds",
            "Seconds to commit one batch to the store",
            metrics.commit_seconds.clone(),
        );
        metrics
    }
}
