//! Gatehouse collector: the central service agents ship events to.
//!
//! This first version is the service skeleton the later work plugs into: an HTTP server on
//! loopback with `/healthz`, `/readyz` and Prometheus `/metrics`. Event ingest, approvals,
//! policy distribution, the ClickHouse writer and the audit query API arrive in later
//! versions; until then every other path answers 404.
//!
//! # Layout
//! - [`cli`]: library parts of the `gatehouse` user CLI (token cache, exec credential).
//! - [`config`]: [`config::CollectorConfig`] with defaults.
//! - [`ingest`]: the TLS `POST /v1/ingest` endpoint agents ship batches to.
//! - [`metrics`]: the collector's metric families, registered under `gatehouse_collector`.
//! - [`server`]: the HTTP listener, routes and graceful shutdown; [`server::run`].
//! - [`shutdown`]: the SIGINT/SIGTERM future.
//! - [`store`]: the audit store ([`store::AuditStore`]; ClickHouse and in-memory).
//! - [`telemetry`]: tracing subscriber setup (`--log-format json|text`).
#![deny(missing_docs)]

pub mod cli;
pub mod config;
pub mod ingest;
pub mod metrics;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod telemetry;
