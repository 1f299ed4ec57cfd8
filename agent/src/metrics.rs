//! Prometheus metrics of the agent (prefix `gatehouse_agent_`): per-request counters fed
//! as an [`AuditSink`], plus direct counters for what no audit event carries (TLS
//! handshakes, connections, JWKS refreshes, authentication failures by reason).

use crate::audit::sink::AuditSink;
use gatehouse_common::audit::{AnsweredBy, AuditEvent};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Kubernetes verb (`get`, `list`, `watch`, ...).
    pub verb: String,
    /// `allow`, `deny`, `require_approval`.
    pub decision: String,
    /// HTTP status code.
    pub code: String,
}

/// One `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: String,
}

/// One `outcome` label (`success` / `failure`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// How it went.
    pub outcome: String,
}

/// Latency buckets in seconds: 0.25 ms doubling up to ~65 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.000_25, 2.0, 19)
}

/// All agent metrics and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
    open_sessions: Gauge,
    upstream_errors: Counter,
    auth_failures: Family<ReasonLabel, Counter>,
    jwks_refreshes: Family<OutcomeLabel, Counter>,
    tls_handshake_failures: Counter,
    open_connections: Gauge,
    // --- spool + shipper ---
    spool: crate::spool::SpoolMetrics,
    ship: crate::ship::ShipMetrics,
    // --- policy ---
    policy: crate::policy::PolicyMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gatehouse_agent");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by Kubernetes verb, decision and HTTP code",
            requests.clone(),
        );
        let latency = Histogram::new(latency_buckets());
        registry.register(
            "request_duration_seconds",
            "Time from request arrival to response head (streams: to first byte)",
            latency.clone(),
        );
        let open_sessions = Gauge::default();
        registry.register(
            "open_sessions",
            "exec/attach/port-forward sessions currently relayed",
            open_sessions.clone(),
        );
        let upstream_errors = Counter::default();
        registry.register(
            "upstream_errors",
            "Requests the agent answered 502/503/504 because the API server failed",
            upstream_errors.clone(),
        );
        let auth_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "auth_failures",
            "Refused credentials, by reason",
            auth_failures.clone(),
        );
        let jwks_refreshes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "jwks_refreshes",
            "Periodic fetches of the issuer's signing keys, by outcome",
            jwks_refreshes.clone(),
        );
        let tls_handshake_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "Client TLS handshakes that failed or timed out",
            tls_handshake_failures.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections currently open",
            open_connections.clone(),
        );
        // --- spool + shipper ---
        let spool = crate::spool::SpoolMetrics::default();
        spool.register(&mut registry);
        let ship = crate::ship::ShipMetrics::default();
        ship.register(&mut registry);
        // --- policy ---
        let policy = crate::policy::PolicyMetrics::default();
        policy.register(&mut registry);
        Self {
            policy,
            spool,
            ship,
            registry,
            requests,
            latency,
            open_sessions,
            upstream_errors,
            auth_failures,
            jwks_refreshes,
            tls_handshake_failures,
            open_connections,
        }
    }

    /// The Prometheus text exposition of all metrics.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a refused credential (`reason` is a fixed, low-cardinality name).
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts one periodic JWKS refresh.
    pub fn jwks_refresh(&self, ok: bool) {
        let outcome = if ok { "success" } else { "failure" };
        self.jwks_refreshes
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Counts a failed or timed-out TLS handshake.
    pub fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.inc();
    }

    // --- spool + shipper ---
    /// The spool's metrics (registered here, fed by the spool).
    pub fn spool(&self) -> &crate::spool::SpoolMetrics {
        &self.spool
    }

    /// The active policy's metrics.
    pub fn policy(&self) -> &crate::policy::PolicyMetrics {
        &self.policy
    }

    /// The shipper's metrics.
    pub fn ship(&self) -> &crate::ship::ShipMetrics {
        &self.ship
    }

    /// Marks a connection open until the returned guard is dropped.
    pub fn connection(&self) -> ConnectionGuard {
        self.open_connections.inc();
        ConnectionGuard(self.open_connections.clone())
    }
}

/// Decrements the open-connections gauge when dropped.
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl AuditSink for Metrics {
    fn emit(&self, event: &AuditEvent) {
        match event {
            AuditEvent::ApiRequest(e) => {
                let verb = if e.verb.is_empty() {
                    "unknown"
                } else {
                    &e.verb
                };
                self.requests
                    .get_or_create(&RequestLabels {
                        verb: verb.to_string(),
                        decision: e.decision.as_str().to_string(),
                        code: e.status_code.to_string(),
                    })
                    .inc();
                self.latency.observe(e.latency_ms / 1000.0);
                if e.session_id.is_some() && e.status_code == 101 {
                    self.open_sessions.inc();
                }
                if e.answered_by == AnsweredBy::Agent && matches!(e.status_code, 502..=504) {
                    self.upstream_errors.inc();
                }
            }
            AuditEvent::SessionEnd(_) => {
                self.open_sessions.dec();
            }
            AuditEvent::SessionChunk(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_common::audit::{ApiRequestEvent, Decision, SessionEndEvent};

    fn request(verb: &str, code: u16, by: AnsweredBy, session: bool) -> AuditEvent {
        AuditEvent::ApiRequest(ApiRequestEvent {
            verb: verb.into(),
            status_code: code,
            decision: Decision::Allow,
            answered_by: by,
            latency_ms: 0.3,
            session_id: session.then(|| "s1".to_string()),
            ..ApiRequestEvent::default()
        })
    }

    #[test]
    fn events_become_counts() {
        let m = Metrics::new();
        m.emit(&request("get", 200, AnsweredBy::Upstream, false));
        m.emit(&request("get", 200, AnsweredBy::Upstream, false));
        m.emit(&request("list", 503, AnsweredBy::Agent, false));
        m.emit(&request("create", 101, AnsweredBy::Upstream, true));
        m.auth_failure("expired");
        m.jwks_refresh(true);
        m.tls_handshake_failed();
        let conn = m.connection();
        let text = m.render();
        for line in [
            "gatehouse_agent_requests_total{verb=\"get\",decision=\"allow\",code=\"200\"} 2",
            "gatehouse_agent_requests_total{verb=\"list\",decision=\"allow\",code=\"503\"} 1",
            "gatehouse_agent_upstream_errors_total 1",
            "gatehouse_agent_open_sessions 1",
            "gatehouse_agent_auth_failures_total{reason=\"expired\"} 1",
            "gatehouse_agent_jwks_refreshes_total{outcome=\"success\"} 1",
            "gatehouse_agent_tls_handshake_failures_total 1",
            "gatehouse_agent_open_connections 1",
            "gatehouse_agent_request_duration_seconds_bucket{le=\"0.00025\"} 0",
            "gatehouse_agent_request_duration_seconds_bucket{le=\"0.0005\"} 4",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        drop(conn);
        m.emit(&AuditEvent::SessionEnd(SessionEndEvent::default()));
        let text = m.render();
        assert!(text.contains("gatehouse_agent_open_sessions 0"), "{text}");
        assert!(
            text.contains("gatehouse_agent_open_connections 0"),
            "{text}"
        );
    }
}
