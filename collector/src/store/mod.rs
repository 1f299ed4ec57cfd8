//! The audit store: where the collector commits the events agents ship.
//!
//! [`AuditStore`] is what the ingest endpoint needs: insert a batch idempotently by
//! `event_id` (a re-sent batch adds no rows) and report health. [`clickhouse`] is the real
//! store; [`embedded`] is SQLite on local disk for a collector without ClickHouse;
//! [`memory`] is an in-process one for tests of the ingest path. [`query`] is what
//! the query API asks of a store; [`clickhouse_query`] answers it from ClickHouse.

pub mod clickhouse;
pub mod clickhouse_query;
pub mod embedded;
pub mod memory;
pub mod query;
pub mod rows;
pub mod schema;

use futures_util::future::BoxFuture;
use gatehouse_common::audit::AuditEvent;

/// What committing one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InsertOutcome {
    /// Events that became new rows.
    pub inserted: u64,
    /// Events already stored (or repeated within the batch): nothing written for them.
    pub duplicates: u64,
}

/// Why the store could not commit (the batch is then not acked and will be re-sent).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// ClickHouse answered with an error or could not be reached.
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] ::clickhouse::error::Error),
    /// The embedded (SQLite) store failed.
    #[error("embedded store: {0}")]
    Embedded(#[from] embedded::EmbeddedError),
    /// The store did not answer in time.
    #[error("store did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The store is deliberately unavailable (tests, shutdown).
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// A place that durably stores audit events.
pub trait AuditStore: Send + Sync + 'static {
    /// Stores `events`, skipping every `event_id` already stored. Returns only once the new
    /// rows are committed; an error means nothing may be considered stored.
    fn insert<'a>(
        &'a self,
        events: &'a [AuditEvent],
    ) -> BoxFuture<'a, Result<InsertOutcome, StoreError>>;

    /// [`Self::insert`] for events their agent marked as never sent before
    /// (`Batch::fresh`): none of them can be stored yet, so a store may skip looking up
    /// stored `event_id`s (duplicates within `events` are still dropped). The default
    /// checks anyway.
    fn insert_fresh<'a>(
        &'a self,
        events: &'a [AuditEvent],
    ) -> BoxFuture<'a, Result<InsertOutcome, StoreError>> {
        self.insert(events)
    }

    /// Whether the store answers now.
    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}
