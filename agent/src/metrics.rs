//! The agent's Prometheus metrics (prefix `gatehouse_agent_`), registered on a registry the
//! caller owns. Per-request figures come from audit events ([`Metrics`] is an
//! [`AuditSink`]), so metrics and the audit trail can never disagree; connection, TLS,
//! authentication and JWKS figures are recorded directly where they happen.

use crate::audit::sink::AuditSink;
use gatehouse_common::audit::{AnsweredBy, AuditEvent, SessionKind};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets in seconds: fine at the low end, where the agent's own overhead lives.
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0,
];

/// Verbs used as label values; anything else (extension methods) is `other`, so a client
/// cannot grow the label set.
const KNOWN_VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "proxy",
    "head",
    "post",
    "put",
    "options",
];

/// Labels of a finished request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Kubernetes verb (or lower-case method), bounded to [`KNOWN_VERBS`] + `other`.
    pub verb: String,
    /// `allow`, `deny` or `require_approval`.
    pub decision: String,
    /// HTTP status code returned to the client.
    pub code: u16,
}

/// Labels by verb only (latency histogram).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// Bounded verb.
    pub verb: String,
}

/// Labels by a fixed, code-defined reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// A `&'static str` from the code, never user input.
    pub reason: String,
}

/// Labels by session kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `exec`, `attach` or `port_forward`.
    pub kind: String,
}

/// Every metric the agent exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    request_latency: Family<VerbLabels, Histogram>,
    open_sessions: Gauge,
    sessions: Family<KindLabels, Counter>,
    upstream_errors: Counter,
    auth_failures: Family<ReasonLabels, Counter>,
    jwks_refreshes: Family<ReasonLabels, Counter>,
    tls_handshake_failures: Counter,
    open_connections: Gauge,
    refused_connections: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            request_latency: Family::new_with_constructor(|| {
                Histogram::new(LATENCY_BUCKETS.iter().copied())
            }),
            open_sessions: Gauge::default(),
            sessions: Family::default(),
            upstream_errors: Counter::default(),
            auth_failures: Family::default(),
            jwks_refreshes: Family::default(),
            tls_handshake_failures: Counter::default(),
            open_connections: Gauge::default(),
            refused_connections: Counter::default(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them under `gatehouse_agent` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("gatehouse_agent");
        r.register(
            "requests",
            "Requests answered, by verb, decision and status code",
            m.requests.clone(),
        );
        r.register(
            "request_latency_seconds",
            "Time from request arrival to response headers, by verb",
            m.request_latency.clone(),
        );
        r.register(
            "open_sessions",
            "Exec, attach and port-forward sessions now open",
            m.open_sessions.clone(),
        );
        r.register(
            "sessions",
            "Exec, attach and port-forward sessions ended, by kind",
            m.sessions.clone(),
        );
        r.register(
            "upstream_errors",
            "Requests the agent answered itself because the API server could not be reached",
            m.upstream_errors.clone(),
        );
        r.register(
            "auth_failures",
            "Requests refused by authentication, by reason",
            m.auth_failures.clone(),
        );
        r.register(
            "jwks_refreshes",
            "Fetches of the OIDC issuer's signing keys, by result",
            m.jwks_refreshes.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "Client connections whose TLS handshake failed or timed out",
            m.tls_handshake_failures.clone(),
        );
        r.register(
            "open_connections",
            "Client connections now open",
            m.open_connections.clone(),
        );
        r.register(
            "refused_connections",
            "Client connections refused because --max-connections was reached",
            m.refused_connections.clone(),
        );
        m
    }

    /// An authentication failure, by a fixed reason (see `AuthError::reason`).
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// A JWKS fetch; `result` is `ok` or `error`.
    pub fn jwks_refresh(&self, result: &'static str) {
        self.jwks_refreshes
            .get_or_create(&ReasonLabels {
                reason: result.into(),
            })
            .inc();
    }

    /// A failed or timed-out TLS handshake.
    pub fn tls_handshake_failure(&self) {
        self.tls_handshake_failures.inc();
    }

    /// A connection was refused at the connection limit.
    pub fn connection_refused(&self) {
        self.refused_connections.inc();
    }

    /// Counts a connection as open until the returned guard is dropped.
    pub fn connection_opened(&self) -> ConnectionGuard {
        self.open_connections.inc();
        ConnectionGuard(self.open_connections.clone())
    }
}

/// Decrements the open-connections gauge when dropped.
#[derive(Debug)]
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn bounded_verb(verb: &str) -> String {
    if KNOWN_VERBS.contains(&verb) {
        verb.to_string()
    } else {
        "other".to_string()
    }
}

fn kind_name(kind: SessionKind) -> &'static str {
    match kind {
        SessionKind::Exec => "exec",
        SessionKind::Attach => "attach",
        SessionKind::PortForward => "port_forward",
    }
}

impl AuditSink for Metrics {
    fn emit(&self, event: &AuditEvent) {
        match event {
            AuditEvent::ApiRequest(e) => {
                let verb = bounded_verb(&e.verb);
                self.requests
                    .get_or_create(&RequestLabels {
                        verb: verb.clone(),
                        decision: e.decision.as_str().into(),
                        code: e.status_code,
                    })
                    .inc();
                self.request_latency
                    .get_or_create(&VerbLabels { verb })
                    .observe(e.latency_ms / 1000.0);
                if e.session_id.is_some() && e.status_code == 101 {
                    self.open_sessions.inc();
                }
                if e.answered_by == AnsweredBy::Agent && matches!(e.status_code, 502..=504) {
                    self.upstream_errors.inc();
                }
            }
            AuditEvent::SessionEnd(e) => {
                self.open_sessions.dec();
                self.sessions
                    .get_or_create(&KindLabels {
                        kind: kind_name(e.kind).into(),
                    })
                    .inc();
            }
        }
    }
}

/// The registry in the Prometheus text exposition format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_common::audit::{ApiRequestEvent, Decision, SessionEndEvent};

    fn request(verb: &str, code: u16, answered_by: AnsweredBy) -> AuditEvent {
        AuditEvent::ApiRequest(ApiRequestEvent {
            verb: verb.into(),
            status_code: code,
            decision: Decision::Allow,
            answered_by,
            latency_ms: 0.4,
            ..ApiRequestEvent::default()
        })
    }

    #[test]
    fn events_become_counts() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.emit(&request("list", 200, AnsweredBy::Upstream));
        m.emit(&request("list", 200, AnsweredBy::Upstream));
        m.emit(&request("BREW", 405, AnsweredBy::Upstream));
        m.emit(&request("get", 503, AnsweredBy::Agent));
        let text = encode(&registry);
        assert!(
            text.contains(
                r#"gatehouse_agent_requests_total{verb="list",decision="allow",code="200"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"verb="other""#), "{text}");
        assert!(!text.contains("BREW"), "{text}");
        assert!(
            text.contains("gatehouse_agent_upstream_errors_total 1"),
            "{text}"
        );
        // 0.4 ms lands in the 0.5 ms bucket, not the 0.25 ms one.
        assert!(
            text.contains(
                r#"gatehouse_agent_request_latency_seconds_bucket{le="0.00025",verb="list"} 0"#
            ) || text.contains(
                r#"gatehouse_agent_request_latency_seconds_bucket{verb="list",le="0.00025"} 0"#
            ),
            "{text}"
        );
    }

    #[test]
    fn sessions_open_and_close() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        let open = AuditEvent::ApiRequest(ApiRequestEvent {
            verb: "get".into(),
            status_code: 101,
            session_id: Some("s1".into()),
            ..ApiRequestEvent::default()
        });
        m.emit(&open);
        assert!(encode(&registry).contains("gatehouse_agent_open_sessions 1"));
        m.emit(&AuditEvent::SessionEnd(SessionEndEvent {
            session_id: "s1".into(),
            ..SessionEndEvent::default()
        }));
        let text = encode(&registry);
        assert!(text.contains("gatehouse_agent_open_sessions 0"), "{text}");
        assert!(
            text.contains(r#"gatehouse_agent_sessions_total{kind="exec"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn connection_guard_counts_down() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        let guard = m.connection_opened();
        assert!(encode(&registry).contains("gatehouse_agent_open_connections 1"));
        drop(guard);
        assert!(encode(&registry).contains("gatehouse_agent_open_connections 0"));
    }
}
