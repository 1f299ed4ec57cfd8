//! Gatehouse agent: the node-local gateway every kubectl request goes through.
//!
//! # Layout
//! - [`config`]: typed settings ([`config::AgentConfig`]) with defaults and validation.
//! - [`cli`]: `gatehouse-agent` command-line flags, turned into an [`config::AgentConfig`].
//! - [`telemetry`]: tracing subscriber setup (`--log-format json|text`).
//! - [`tls`]: reading PEM files into rustls server and client configs.
//! - [`server`]: the TLS listener (h2 + http/1.1, upgrades) and graceful shutdown; [`server::run`].
//! - [`shutdown`]: the SIGINT/SIGTERM future.
//! - [`proxy`]: the request path, assembled in one function, phase by phase.
//! - [`authenticate`]: Bearer OIDC ID token verification (discovery, JWKS, claims, cache).
//! - [`classify`]: [`classify::RequestInfo`] and rejection of ambiguous paths.
//! - [`authorize`]: the policy decides a classified request (impersonation included).
//! - [`policy`]: the active policy, its sources (file, collector long-poll) and cache.
//! - [`forward`]: the upstream client: header rewriting, impersonation, streaming, upgrades;
//!   `forward::mask`, the mask phase (JSON-only `Accept`, gzip, masked bodies, watches, logs).
//! - [`metrics`]: Prometheus metrics (`gatehouse_agent_*`), fed by audit events.
//! - [`ops`]: the ops listener: `/healthz`, `/readyz`, `/metrics`.
//! - [`audit`]: the per-request context and its one audit line.
//! - [`status`]: every error the agent answers with, as a `v1.Status` response.
//! - [`metrics`]: Prometheus metrics (an audit sink plus direct counters).
//! - [`ops`]: the operations listener: `/healthz`, `/readyz`, `/metrics`.
//! - [`upstream`]: where the API server is and the agent's own credential there (flags,
//!   in-cluster, kubeconfig: token, token file, client certificate, exec plugin).
//! - [`spool`]: the durable on-disk audit spool (segments, CRC, ack cursor, size bound).
//! - [`ship`]: the shipper: spooled events to the collector over one HTTP/2 stream.
//! - [`record`]: session recording: WebSocket/SPDY tap parsers, asciicast v2 chunks.
//! - [`ebpf`]: loads the embedded eBPF object and reads kernel events from its ring buffer.
#![deny(missing_docs)]

pub mod audit;
pub mod authenticate;
pub mod authorize;
pub mod classify;
pub mod cli;
pub mod config;
pub mod ebpf;
pub mod forward;
pub mod metrics;
pub mod ops;
pub mod policy;
pub mod proxy;
// --- session recording (issue 6) ---
pub mod record;
pub mod server;
pub mod shutdown;
// --- spool + shipper ---
pub mod ship;
pub mod spool;
pub mod status;
pub mod telemetry;
pub mod tls;
// --- upstream sources and credentials ---
pub mod upstream;

/// Boxed error type carried by response and request bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request the agent sends and every response it returns.
pub type Body = http_body_util::combinators::BoxBody<bytes::Bytes, BoxError>;

/// Wraps a complete byte buffer as a [`Body`].
pub fn full_body(bytes: impl Into<bytes::Bytes>) -> Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}
