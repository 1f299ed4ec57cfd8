//! The embedded audit store: SQLite on local disk, for one collector without a ClickHouse
//! server (`cargo xtask dev`, small single-node installs).
//!
//! # Durability
//! WAL journal with `synchronous=FULL`: a batch's transaction is fsynced before `insert`
//! returns, so an ack means the rows survive a crash or a power loss.
//!
//! # Idempotency
//! `event_id` is each table's primary key and rows go in with `INSERT OR IGNORE`, one
//! transaction per batch: a re-sent batch (or an id repeated inside one) adds no row, and
//! the statement's change count says what was new. Unlike ClickHouse there is no gap: a
//! commit abandoned by the store timeout either committed (the retry is then ignored) or
//! rolled back.
//!
//! # Threads
//! rusqlite blocks, so every call runs on tokio's blocking pool: one writer connection
//! (SQLite has one writer at a time anyway) and one reader connection (WAL lets reads run
//! beside a write), each behind its own mutex.

mod query;
mod schema;

use super::rows::enum_name;
use super::{AuditStore, InsertOutcome, StoreError};
use futures_util::future::BoxFuture;
use gatehouse_common::audit::AuditEvent;
use rusqlite::{Connection, ErrorCode, OpenFlags, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use schema::SCHEMA_VERSION;

/// The database file's name inside `--store-dir`.
pub const FILE_NAME: &str = "audit.sqlite3";

/// How long a statement waits for a lock held by another connection (e.g. a `sqlite3`
/// shell writing to the file) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Rows deleted per retention transaction, so pruning never holds the write lock long.
const PRUNE_CHUNK: i64 = 5_000;

/// Why the embedded store failed.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The store directory could not be created or is not a directory.
    #[error("store directory {path}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The database file could not be created (permissions, a read-only file system).
    #[error("cannot create {path} (is the directory writable by this user?)")]
    Create {
        /// The database file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// SQLite could not open or create the file (permissions, missing directory, ...).
    #[error("cannot open {path} (is the directory writable by this user?)")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The file exists but is not an SQLite database.
    #[error("{path} is not an SQLite database (move it away or pick another --store-dir)")]
    NotADatabase {
        /// The file.
        path: PathBuf,
    },
    /// The file was written by a newer collector.
    #[error(
        "{path} has schema version {found}, newer than this collector's {supported}: \
         run a collector at least as new as the one that wrote it"
    )]
    SchemaTooNew {
        /// The file.
        path: PathBuf,
        /// Its `PRAGMA user_version`.
        found: i64,
        /// [`SCHEMA_VERSION`].
        supported: i64,
    },
    /// A statement failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// An event or a stored value did not (de)serialise.
    #[error("stored event: {0}")]
    Json(#[from] serde_json::Error),
    /// The blocking task died (a panic in SQLite code; nothing is considered stored).
    #[error("store task failed: {0}")]
    Task(String),
}

/// The embedded [`AuditStore`] and [`AuditQuery`](super::query::AuditQuery).
pub struct EmbeddedStore {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    timeout: Duration,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What [`EmbeddedStore::open`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// The database file.
    pub path: PathBuf,
    /// `user_version` before opening (0 for a new file).
    pub from_version: i64,
    /// Migration versions applied now.
    pub applied: Vec<i64>,
}

fn lock(conn: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    // A panic mid-call leaves SQLite consistent (an open transaction rolls back when its
    // handle drops), so a poisoned lock is still usable.
    match conn.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn not_a_database(err: &rusqlite::Error) -> bool {
    err.sqlite_error_code() == Some(ErrorCode::NotADatabase)
}

fn connect(path: &Path) -> Result<Connection, EmbeddedError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| EmbeddedError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let setup = |conn: &Connection| -> rusqlite::Result<()> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // The first statement that reads the header: a foreign file fails here.
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(%mode, "sqlite did not switch to WAL");
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(())
    };
    match setup(&conn) {
        Ok(()) => Ok(conn),
        Err(e) if not_a_database(&e) => Err(EmbeddedError::NotADatabase {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(EmbeddedError::Open {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn create_dir(dir: &Path) -> Result<(), EmbeddedError> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |source| EmbeddedError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    // 0700: audit rows name users and commands; only the collector's user reads them.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    let meta = std::fs::metadata(dir).map_err(err)?;
    if !meta.is_dir() {
        return Err(err(std::io::Error::other("not a directory")));
    }
    Ok(())
}

/// Creates `path` empty with mode 0600 unless it exists (an empty file is an empty
/// database); SQLite gives its `-wal` and `-shm` files the database file's mode.
fn create_private_file(path: &Path) -> Result<(), EmbeddedError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(EmbeddedError::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

impl EmbeddedStore {
    /// Opens (creating when missing) `dir/audit.sqlite3`, applies pending migrations, and
    /// refuses a foreign file or a newer schema. Blocking: call it before serving, or on
    /// a blocking thread.
    pub fn open(dir: &Path, timeout: Duration) -> Result<(Self, OpenReport), EmbeddedError> {
        create_dir(dir)?;
        let path = dir.join(FILE_NAME);
        create_private_file(&path)?;
        let mut writer = connect(&path)?;
        let (from_version, applied) = schema::migrate(&mut writer, &path)?;
        let reader = connect(&path)?;
        let store = Self {
            path: path.clone(),
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
            timeout,
        };
        Ok((
            store,
            OpenReport {
                path,
                from_version,
                applied,
            },
        ))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the writer or the reader connection on the blocking pool, bounded by the
    /// store timeout. A timed-out call may still finish in the background; its transaction
    /// then either committed (a re-sent batch is ignored) or rolled back.
    async fn run<T, F>(&self, write: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, EmbeddedError> + Send + 'static,
    {
        let conn = if write { &self.writer } else { &self.reader }.clone();
        let task = tokio::task::spawn_blocking(move || f(&mut lock(&conn)));
        match tokio::time::timeout(self.timeout, task).await {
            Err(_) => Err(StoreError::Timeout(self.timeout)),
            Ok(Err(join)) => Err(EmbeddedError::Task(join.to_string()).into()),
            Ok(Ok(result)) => result.map_err(StoreError::from),
        }
    }

    /// Deletes rows older than `retention` (API requests by `time`, sessions by `started`);
    /// returns how many were deleted.
    pub async fn prune(&self, retention: Duration) -> Result<u64, StoreError> {
        // A retention longer than chrono can count back keeps everything.
        let cutoff = chrono::Duration::from_std(retention)
            .ok()
            .and_then(|keep| chrono::Utc::now().checked_sub_signed(keep))
            .map_or(i64::MIN, |t| t.timestamp_micros());
        self.run(true, move |conn| {
            let mut deleted = 0u64;
            for (table, column) in [
                ("api_requests", "time_us"),
                ("sessions", "started_us"),
                ("session_chunks", "time_us"),
            ] {
                let sql = format!(
                    "DELETE FROM {table} WHERE rowid IN \
                     (SELECT rowid FROM {table} WHERE {column} < ?1 LIMIT ?2)"
                );
                loop {
                    let n = conn.execute(&sql, params![cutoff, PRUNE_CHUNK])?;
                    deleted += n as u64;
                    if (n as i64) < PRUNE_CHUNK {
                        break;
                    }
                }
            }
            Ok(deleted)
        })
        .await
    }

    /// Prunes now and then every `every`, forever (spawn it).
    pub async fn prune_periodically(self: Arc<Self>, retention: Duration, every: Duration) {
        loop {
            match self.prune(retention).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "pruned audit rows past retention"),
                Err(err) => tracing::warn!(error = %err, "pruning the audit store failed"),
            }
            tokio::time::sleep(every).await;
        }
    }
}

fn insert_batch(
    conn: &mut Connection,
    events: &[AuditEvent],
) -> Result<InsertOutcome, EmbeddedError> {
    let tx = conn.transaction()?;
    let mut outcome = InsertOutcome::default();
    {
        let mut api = tx.prepare_cached(
            "INSERT OR IGNORE INTO api_requests \
             (event_id, time_us, user, \"groups\", verb, resource, namespace, name, decision, \
              status_code, session_id, event) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        let mut sessions = tx.prepare_cached(
            "INSERT OR IGNORE INTO sessions \
             (event_id, session_id, started_us, user, \"groups\", kind, namespace, pod, event) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let mut chunks = tx.prepare_cached(
            "INSERT OR IGNORE INTO session_chunks (event_id, session_id, seq, time_us, event) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for event in events {
            let n = match event {
                AuditEvent::ApiRequest(e) => api.execute(params![
                    e.event_id,
                    e.time.timestamp_micros(),
                    e.user,
                    serde_json::to_string(&e.groups)?,
                    e.verb,
                    e.resource,
                    e.namespace,
                    e.name,
                    e.decision.as_str(),
                    e.status_code,
                    e.session_id,
                    serde_json::to_string(e)?,
                ])?,
                AuditEvent::SessionEnd(e) => sessions.execute(params![
                    e.event_id,
                    e.session_id,
                    e.started.timestamp_micros(),
                    e.user,
                    serde_json::to_string(&e.groups)?,
                    enum_name(&e.kind),
                    e.namespace,
                    e.pod,
                    serde_json::to_string(e)?,
                ])?,
                AuditEvent::SessionChunk(e) => chunks.execute(params![
                    e.event_id,
                    e.session_id,
                    i64::try_from(e.seq).unwrap_or(i64::MAX),
                    e.time.timestamp_micros(),
                    serde_json::to_string(e)?,
                ])?,
            };
            if n == 0 {
                outcome.duplicates += 1;
            } else {
                outcome.inserted += 1;
            }
        }
    }
    // synchronous=FULL: the commit returns once the WAL is fsynced.
    tx.commit()?;
    Ok(outcome)
}

impl AuditStore for EmbeddedStore {
    fn insert<'a>(
        &'a self,
        events: &'a [AuditEvent],
    ) -> BoxFuture<'a, Result<InsertOutcome, StoreError>> {
        Box::pin(async move {
            if events.is_empty() {
                return Ok(InsertOutcome::default());
            }
            let events = events.to_vec();
            self.run(true, move |conn| insert_batch(conn, &events))
                .await
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.run(false, |conn| {
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
            Ok(())
        }))
    }
}

#[cfg(test)]
mod tests;
