//! The embedded store's tables and their migrations, versioned by `PRAGMA user_version`.
//!
//! Each table keeps the whole event as JSON (`event`, what queries return) plus the
//! columns the query filters use, with indexes for the common ones. Times are microseconds
//! since the epoch (`*_us`), the cursor's unit.

use super::EmbeddedError;
use rusqlite::Connection;
use std::path::Path;

/// One schema step: applied in one transaction that also sets `user_version`.
struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "api_requests and sessions",
        sql: r#"
CREATE TABLE api_requests (
    event_id    TEXT    NOT NULL PRIMARY KEY,
    time_us     INTEGER NOT NULL,
    user        TEXT    NOT NULL,
    "groups"    TEXT    NOT NULL,   -- JSON array
    verb        TEXT    NOT NULL,
    resource    TEXT    NOT NULL,
    namespace   TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    decision    TEXT    NOT NULL,
    status_code INTEGER NOT NULL,
    session_id  TEXT,               -- NULL when the request has no session
    event       TEXT    NOT NULL    -- the ApiRequestEvent as JSON
);
CREATE INDEX api_requests_time      ON api_requests (time_us, event_id);
CREATE INDEX api_requests_user      ON api_requests (user, time_us, event_id);
CREATE INDEX api_requests_namespace ON api_requests (namespace, time_us, event_id);
CREATE INDEX api_requests_session   ON api_requests (session_id) WHERE session_id IS NOT NULL;

CREATE TABLE sessions (
    event_id    TEXT    NOT NULL PRIMARY KEY,
    session_id  TEXT    NOT NULL,
    started_us  INTEGER NOT NULL,
    user        TEXT    NOT NULL,
    "groups"    TEXT    NOT NULL,   -- JSON array
    kind        TEXT    NOT NULL,
    namespace   TEXT    NOT NULL,
    pod         TEXT    NOT NULL,
    event       TEXT    NOT NULL    -- the SessionEndEvent as JSON
);
CREATE INDEX sessions_started   ON sessions (started_us, event_id);
CREATE INDEX sessions_user      ON sessions (user, started_us, event_id);
CREATE INDEX sessions_namespace ON sessions (namespace, started_us, event_id);
CREATE INDEX sessions_session   ON sessions (session_id);
"#,
    },
    Migration {
        version: 2,
        name: "session_chunks",
        sql: r#"
CREATE TABLE session_chunks (
    event_id    TEXT    NOT NULL PRIMARY KEY,
    session_id  TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    time_us     INTEGER NOT NULL,
    event       TEXT    NOT NULL    -- the SessionChunkEvent as JSON
);
CREATE INDEX session_chunks_session ON session_chunks (session_id, seq);
CREATE INDEX session_chunks_time    ON session_chunks (time_us);
"#,
    },
];

/// The schema version this binary writes (the last migration's).
pub const SCHEMA_VERSION: i64 = 2;

/// Reads `user_version`, refuses a newer one, and applies the missing migrations in order.
/// Returns (version found, versions applied).
pub(super) fn migrate(
    conn: &mut Connection,
    path: &Path,
) -> Result<(i64, Vec<i64>), EmbeddedError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(EmbeddedError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        let tx = conn.transaction()?;
        tx.execute_batch(m.sql)?;
        // PRAGMA takes no bound parameters; the version is a constant integer.
        tx.execute_batch(&format!("PRAGMA user_version = {}", m.version))?;
        tx.commit()?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied embedded store migration"
        );
        applied.push(m.version);
    }
    Ok((found, applied))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_migration_is_the_schema_version_and_versions_increase() {
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
    }
}
