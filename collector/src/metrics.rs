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
