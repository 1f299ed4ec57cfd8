//! The ClickHouse audit store: connects lazily (the collector starts even while ClickHouse is
//! down), detects the server's features by version, applies the versioned migrations once,
//! and commits each batch as one `INSERT` per table, idempotently by `event_id`.
//!
//! # Idempotency
//! Before inserting, the store asks which of the batch's `event_id`s already exist, limited
//! to the batch's own time range (a re-sent event keeps its time, so the partition min/max
//! index prunes the scan to the batch's day(s)), and inserts only the others. Check and
//! insert run under one lock, so this collector never writes an event twice, and a plain
//! `count()` is exact. The tables are also `ReplacingMergeTree` with `event_id` last in the
//! sort key: if two collector replicas ever raced on the same re-sent batch, merges fold the
//! copies (the check alone is enough for one collector; the engine is the backstop).
//!
//! A batch its agent marks fresh (`Batch::fresh`: never sent before, see
//! [`AuditStore::insert_fresh`]) skips the lookup: none of its ids can be stored yet, and
//! the lookup reads the `event_id`s of the batch's whole day, so it is most of the cost of
//! a commit on a busy day. Every re-send is checked as above.
//!
//! One gap remains: a commit abandoned by the store timeout may still complete inside
//! ClickHouse after the lock is released; if the agent's retry is checked before that, the
//! event is written twice until a merge folds it. 18.16 has no insert deduplication for
//! non-replicated tables; newer servers' `insert_deduplication_token` would close this.

use super::rows::{ApiRequestRow, ChunkRow, SessionRow};
use super::schema::{self, SchemaSettings, ServerFeatures};
use super::{AuditStore, InsertOutcome, StoreError};
use ::clickhouse::{Client, RowOwned, RowWrite};
use futures_util::future::BoxFuture;
use gatehouse_common::audit::AuditEvent;
use serde::Serialize;
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::{Mutex, OnceCell};

/// How to reach ClickHouse.
#[derive(Clone)]
pub struct ClickHouseConfig {
    /// HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// Database holding the audit tables (created when missing).
    pub database: String,
    /// User, if not `default`.
    pub user: Option<String>,
    /// Password (never logged: `Debug` redacts it).
    pub password: Option<String>,
    /// Bound on one batch commit or health check.
    pub timeout: Duration,
    /// Schema settings (retention).
    pub schema: SchemaSettings,
}

impl std::fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("schema", &self.schema)
            .finish()
    }
}

impl ClickHouseConfig {
    /// Settings for `url` and `database`, default user, 30 s timeout, default retention.
    pub fn new(url: impl Into<String>, database: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            database: database.into(),
            user: None,
            password: None,
            timeout: Duration::from_secs(30),
            schema: SchemaSettings::default(),
        }
    }
}

/// What [`ClickHouseStore::migrate`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// `SELECT version()`.
    pub server_version: String,
    /// Features chosen from it.
    pub features: ServerFeatures,
    /// Migration versions applied now (empty when the schema was current).
    pub applied: Vec<u32>,
}

pub(super) struct Ready {
    pub(super) client: Client,
    pub(super) features: ServerFeatures,
}

/// The ClickHouse [`AuditStore`].
pub struct ClickHouseStore {
    config: ClickHouseConfig,
    ready: OnceCell<Ready>,
    report: std::sync::Mutex<Option<MigrationReport>>,
    // Serialises check-then-insert (see the module docs).
    write_lock: Mutex<()>,
}

impl ClickHouseStore {
    /// A store for `config`; nothing is contacted until the first use or [`Self::migrate`].
    pub fn new(config: ClickHouseConfig) -> Self {
        Self {
            config,
            ready: OnceCell::new(),
            report: std::sync::Mutex::new(None),
            write_lock: Mutex::new(()),
        }
    }

    fn base_client(&self) -> Client {
        // `with_validation(false)`: 18.16 refuses the schema query validation sends
        // (TOOLCHAIN.md); rows go as plain RowBinary in column order instead. No transport
        // compression: 18.16's HTTP interface predates the crate's LZ4 framing, and the
        // collector sits next to ClickHouse (the columns are compressed at rest anyway).
        let mut client = Client::default()
            .with_url(self.config.url.clone())
            .with_validation(false)
            .with_compression(::clickhouse::Compression::None);
        if let Some(user) = &self.config.user {
            client = client.with_user(user.clone());
        }
        if let Some(password) = &self.config.password {
            client = client.with_password(password.clone());
        }
        client
    }

    async fn connect(&self) -> Result<Ready, StoreError> {
        let base = self.base_client();
        let version: String = base.query("SELECT version()").fetch_one().await?;
        let features = ServerFeatures::from_version(&version);
        base.query(&format!(
            "CREATE DATABASE IF NOT EXISTS `{}`",
            self.config.database.replace('`', "")
        ))
        .execute()
        .await?;
        let client = base.with_database(self.config.database.clone());
        client
            .query(schema::CREATE_MIGRATIONS_TABLE)
            .execute()
            .await?;
        let done: HashSet<u32> = client
            .query("SELECT DISTINCT version FROM schema_migrations")
            .fetch_all::<u32>()
            .await?
            .into_iter()
            .collect();
        let mut applied = Vec::new();
        for m in schema::migrations(features, self.config.schema) {
            if done.contains(&m.version) {
                continue;
            }
            for statement in &m.statements {
                client.query(statement).execute().await?;
            }
            for add in &m.added_columns {
                let present = client
                    .query(
                        "SELECT count() FROM system.columns \
                         WHERE database = currentDatabase() AND table = ? AND name = ?",
                    )
                    .bind(add.table)
                    .bind(add.column)
                    .fetch_one::<u64>()
                    .await?;
                if present == 0 {
                    client.query(&add.statement).execute().await?;
                }
            }
            client
                .query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, now())")
                .bind(m.version)
                .bind(m.name)
                .execute()
                .await?;
            tracing::info!(
                version = m.version,
                name = m.name,
                "applied schema migration"
            );
            applied.push(m.version);
        }
        tracing::info!(server_version = %version, ?features, "clickhouse store ready");
        let report = MigrationReport {
            server_version: version,
            features,
            applied,
        };
        match self.report.lock() {
            Ok(mut g) => *g = Some(report),
            Err(p) => *p.into_inner() = Some(report),
        }
        Ok(Ready { client, features })
    }

    pub(super) async fn ready(&self) -> Result<&Ready, StoreError> {
        // A failed attempt leaves the cell empty, so the next call tries again.
        self.ready.get_or_try_init(|| self.connect()).await
    }

    /// Connects, detects features and applies pending migrations (at most once per store;
    /// later calls return the first report).
    pub async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        self.bounded(async {
            self.ready().await?;
            let report = match self.report.lock() {
                Ok(g) => g.clone(),
                Err(p) => p.into_inner().clone(),
            };
            report.ok_or_else(|| StoreError::Unavailable("no migration report".into()))
        })
        .await
    }

    pub(super) async fn bounded<T>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.config.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(self.config.timeout)),
        }
    }

    /// Commits `events`; `check`: look up which ids are already stored (see the module docs).
    async fn insert_batch(
        &self,
        events: &[AuditEvent],
        check: bool,
    ) -> Result<InsertOutcome, StoreError> {
        let ready = self.ready().await?;
        let dt64 = ready.features.datetime64;
        let mut outcome = InsertOutcome::default();
        let mut seen = HashSet::new();
        let mut api = Vec::new();
        let mut sessions = Vec::new();
        let mut chunks = Vec::new();
        for e in events {
            if !seen.insert(e.event_id()) {
                outcome.duplicates += 1;
                continue;
            }
            match e {
                AuditEvent::ApiRequest(r) => api.push(ApiRequestRow::new(r, dt64)),
                AuditEvent::SessionEnd(s) => sessions.push(SessionRow::new(s, dt64)),
                AuditEvent::SessionChunk(c) => chunks.push(ChunkRow::new(c, dt64)),
            }
        }
        let _guard = self.write_lock.lock().await;
        let (n, d) = insert_new(&ready.client, "api_requests", "time", api, check, |r| {
            (&r.event_id, r.time.secs())
        })
        .await?;
        outcome.inserted += n;
        outcome.duplicates += d;
        let (n, d) = insert_new(&ready.client, "sessions", "started", sessions, check, |r| {
            (&r.event_id, r.started.secs())
        })
        .await?;
        outcome.inserted += n;
        outcome.duplicates += d;
        let (n, d) = insert_new(
            &ready.client,
            "session_chunks",
            "time",
            chunks,
            check,
            |r| (&r.event_id, r.time.secs()),
        )
        .await?;
        outcome.inserted += n;
        outcome.duplicates += d;
        Ok(outcome)
    }
}

/// Bytes of event ids per duplicate-check query.
const ID_CHECK_BYTES: usize = 64 * 1024;

/// Inserts the rows of `rows` whose event_id is not yet in `table` (all of them without
/// `check`); returns (inserted, already present). `key` gives a row's event_id and time in
/// seconds.
async fn insert_new<T>(
    client: &Client,
    table: &str,
    time_column: &str,
    rows: Vec<T>,
    check: bool,
    key: impl Fn(&T) -> (&String, i64),
) -> Result<(u64, u64), StoreError>
where
    T: RowOwned + RowWrite + Serialize,
{
    if rows.is_empty() {
        return Ok((0, 0));
    }
    if !check {
        return insert_rows(client, table, &rows).await.map(|n| (n, 0));
    }
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    let mut ids = Vec::with_capacity(rows.len());
    for r in &rows {
        let (id, secs) = key(r);
        lo = lo.min(secs);
        hi = hi.max(secs);
        ids.push(id.as_str());
    }
    // The ids go into the SQL text, which ClickHouse bounds (`max_query_size`, 256 KiB by
    // default): ask in chunks well below that, so a large batch never fails for its size.
    // `IN (SELECT arrayJoin(...))` builds a hash set (a literal tuple would too, but the
    // crate binds lists as arrays; `has(array, id)` would scan the array for every row).
    let mut existing: HashSet<String> = HashSet::new();
    let mut start = 0;
    while start < ids.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < ids.len() && (end == start || bytes + ids[end].len() < ID_CHECK_BYTES) {
            bytes += ids[end].len() + 3;
            end += 1;
        }
        let found = client
            .query(&format!(
                "SELECT event_id FROM `{table}` WHERE `{time_column}` >= toDateTime(?) \
                 AND `{time_column}` < toDateTime(?) AND event_id IN (SELECT arrayJoin(?))"
            ))
            .bind(lo.max(0))
            .bind(hi.max(0) + 1)
            .bind(&ids[start..end])
            .fetch_all::<String>()
            .await?;
        existing.extend(found);
        start = end;
    }
    let total = rows.len() as u64;
    let fresh: Vec<T> = rows
        .into_iter()
        .filter(|r| !existing.contains(key(r).0))
        .collect();
    let present = total - fresh.len() as u64;
    if fresh.is_empty() {
        return Ok((0, present));
    }
    Ok((insert_rows(client, table, &fresh).await?, present))
}

/// One INSERT of `rows` into `table`; returns how many. One per table per batch: the batch
/// is the unit the agent waits an ack for, so rows are committed (and the ack sent) when
/// this statement returns.
async fn insert_rows<T>(client: &Client, table: &str, rows: &[T]) -> Result<u64, StoreError>
where
    T: RowOwned + RowWrite + Serialize,
{
    let mut insert = client.insert::<T>(table).await?;
    for r in rows {
        insert.write(r).await?;
    }
    insert.end().await?;
    Ok(rows.len() as u64)
}

impl AuditStore for ClickHouseStore {
    fn insert<'a>(
        &'a self,
        events: &'a [AuditEvent],
    ) -> BoxFuture<'a, Result<InsertOutcome, StoreError>> {
        Box::pin(self.bounded(self.insert_batch(events, true)))
    }

    fn insert_fresh<'a>(
        &'a self,
        events: &'a [AuditEvent],
    ) -> BoxFuture<'a, Result<InsertOutcome, StoreError>> {
        Box::pin(self.bounded(self.insert_batch(events, false)))
    }

    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.bounded(async {
            let ready = self.ready().await?;
            ready.client.query("SELECT 1").execute().await?;
            Ok(())
        }))
    }
}
