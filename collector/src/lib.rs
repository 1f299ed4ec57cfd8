//! Gatehouse collector: the central service agents ship events to.
//!
//! It serves health (`/healthz`, `/readyz`, following the audit store) and Prometheus
//! `/metrics` over plain HTTP on loopback, and the agents' ingest endpoint
//! (`POST /v1/ingest`, TLS + HTTP/2) that commits audit events to the ClickHouse store.
//! With `--api-listen` it also serves the security team's query API (TLS, OIDC, read-only).
//! With `--policy` it holds the active policy and serves it to agents on the ingest
//! listener (`GET /v1/policy`, long-poll). Approvals arrive in a later version.
//!
//! # Layout
//! - [`cli`]: library parts of the `gatehouse` user CLI (token cache, exec credential).
//! - [`config`]: [`config::CollectorConfig`] with defaults.
//! - [`ingest`]: the TLS `POST /v1/ingest` endpoint agents ship batches to.
//! - [`metrics`]: the collector's metric families, registered under `gatehouse_collector`.
//! - [`policy`]: the active policy (`--policy`), its reloads, and `GET /v1/policy` for agents.
//! - [`query_api`]: the audit query API (`/v1/audit/requests`, `/v1/sessions`).
//! - [`server`]: the HTTP listener, routes and graceful shutdown; [`server::run`].
//! - [`shutdown`]: the SIGINT/SIGTERM future.
//! - [`store`]: the audit store ([`store::AuditStore`]; ClickHouse and in-memory).
//! - [`telemetry`]: tracing subscriber setup (`--log-format json|text`).
#![deny(missing_docs)]

pub mod cli;
pub mod config;
pub mod ingest;
pub mod metrics;
pub mod policy;
pub mod query_api;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod tls_listener;
