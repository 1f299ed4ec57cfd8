//! The audit store's ClickHouse schema: server feature detection by version and the
//! versioned migrations, rendered as DDL for the server at hand.
//!
//! Column *types* are the same in RowBinary on every server except the timestamp: String and
//! LowCardinality(String) encode alike, codecs and TTL do not touch the wire. So one row type
//! serves both flavours and only [`ServerFeatures::datetime64`] changes how a time is sent.

/// What the connected server supports, from its `SELECT version()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerFeatures {
    /// `DateTime64(6)` timestamps (20.1+); else `DateTime` in seconds.
    pub datetime64: bool,
    /// `LowCardinality(String)` without the experimental setting (19.6+).
    pub low_cardinality: bool,
    /// Table `TTL` for retention (19.6+).
    pub ttl: bool,
    /// Column `CODEC(...)`s incl. `DoubleDelta` (20.1+).
    pub codecs: bool,
}

impl ServerFeatures {
    /// Debian's 18.16: none of the above.
    pub const LEGACY: Self = Self {
        datetime64: false,
        low_cardinality: false,
        ttl: false,
        codecs: false,
    };

    /// A current server: all of them.
    pub const MODERN: Self = Self {
        datetime64: true,
        low_cardinality: true,
        ttl: true,
        codecs: true,
    };

    /// Features of a server reporting `version` (`18.16.1`, `24.8.4.13`, ...). An
    /// unparsable version gets the legacy set: plain types work everywhere.
    pub fn from_version(version: &str) -> Self {
        let mut parts = version.trim().split('.').map(|p| p.parse::<u32>().ok());
        let (Some(Some(major)), Some(Some(minor))) = (parts.next(), parts.next()) else {
            return Self::LEGACY;
        };
        let at_least = |m: u32, n: u32| (major, minor) >= (m, n);
        Self {
            datetime64: at_least(20, 1),
            low_cardinality: at_least(19, 6),
            ttl: at_least(19, 6),
            codecs: at_least(20, 1),
        }
    }
}

/// Schema settings that are not server features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaSettings {
    /// Days rows are kept (TTL) on servers with TTL; 18.16 keeps everything (drop
    /// partitions by hand: they are daily). Keep it well below ~29,000: the TTL expression
    /// is a `DateTime`, which wraps after 2106 and would then expire every row at once.
    pub retention_days: u32,
}

impl Default for SchemaSettings {
    fn default() -> Self {
        Self {
            retention_days: 400,
        }
    }
}

/// Logical column kinds, rendered per server.
#[derive(Debug, Clone, Copy)]
enum Col {
    /// Free text / ids.
    Str,
    /// Few distinct values (cluster, verb, decision, ...).
    Low,
    /// Long text that compresses well (paths, queries, errors, chunk data).
    Text,
    /// Timestamp (the row's ordering time).
    Time,
    /// `Array(String)`.
    Strs,
    /// Boolean as UInt8 (the same on every server).
    Flag,
    U16,
    U32,
    U64,
    F64,
    I32,
}

fn render(col: Col, f: ServerFeatures) -> String {
    let low = if f.low_cardinality {
        "LowCardinality(String)"
    } else {
        "String"
    };
    let (ty, codec) = match col {
        Col::Str => ("String".to_string(), ""),
        Col::Low => (low.to_string(), ""),
        Col::Text => ("String".to_string(), " CODEC(ZSTD(3))"),
        Col::Time if f.datetime64 => (
            "DateTime64(6, 'UTC')".to_string(),
            " CODEC(DoubleDelta, ZSTD(1))",
        ),
        Col::Time => ("DateTime('UTC')".to_string(), ""),
        Col::Strs => (format!("Array({low})"), ""),
        Col::Flag => ("UInt8".to_string(), ""),
        Col::U16 => ("UInt16".to_string(), ""),
        Col::U32 => ("UInt32".to_string(), ""),
        Col::U64 => ("UInt64".to_string(), " CODEC(T64, ZSTD(1))"),
        Col::F64 => ("Float64".to_string(), " CODEC(Gorilla, ZSTD(1))"),
        Col::I32 => ("Int32".to_string(), ""),
    };
    if f.codecs { format!("{ty}{codec}") } else { ty }
}

/// One table: columns in order (the row structs in `rows.rs` follow the same order), the
/// time column partitioning and ordering it, and the ordering prefix (low → high cardinality).
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Col)],
    time: &'static str,
    order_prefix: &'static [&'static str],
}

/// `ReplacingMergeTree` keyed by the sort key, which ends in `event_id`: the collector never
/// inserts an event twice (it checks first, see `clickhouse.rs`), and if two collectors
/// ever raced on the same re-sent batch, background merges still fold the copies together.
fn create_table(t: &Table, f: ServerFeatures, s: SchemaSettings) -> String {
    let cols: Vec<String> = t
        .columns
        .iter()
        .map(|(name, col)| format!("    `{name}` {}", render(*col, f)))
        .collect();
    let mut order: Vec<&str> = t.order_prefix.to_vec();
    order.push(t.time);
    order.push("event_id");
    let ttl = if f.ttl {
        format!(
            "\nTTL toDateTime(`{}`) + INTERVAL {} DAY",
            t.time, s.retention_days
        )
    } else {
        String::new()
    };
    format!(
        "CREATE TABLE IF NOT EXISTS `{name}` (\n{cols}\n) ENGINE = ReplacingMergeTree()\n\
         PARTITION BY toDate(`{time}`)\nORDER BY ({order}){ttl}",
        name = t.name,
        cols = cols.join(",\n"),
        time = t.time,
        order = order.join(", "),
    )
}

const API_REQUESTS: Table = Table {
    name: "api_requests",
    columns: &[
        ("event_id", Col::Str),
        ("request_id", Col::Str),
        ("session_id", Col::Str),
        ("time", Col::Time),
        ("cluster", Col::Low),
        ("node", Col::Low),
        ("user", Col::Str),
        ("groups", Col::Strs),
        ("auth_method", Col::Low),
        ("source", Col::Str),
        ("user_agent", Col::Low),
        ("method", Col::Low),
        ("path", Col::Text),
        ("query", Col::Text),
        ("is_resource_request", Col::Flag),
        ("verb", Col::Low),
        ("api_group", Col::Low),
        ("api_version", Col::Low),
        ("resource", Col::Low),
        ("subresource", Col::Low),
        ("namespace", Col::Low),
        ("name", Col::Str),
        ("exec_command", Col::Strs),
        ("exec_container", Col::Str),
        ("exec_stdin", Col::Flag),
        ("exec_tty", Col::Flag),
        ("decision", Col::Low),
        ("decided_by", Col::Low),
        ("answered_by", Col::Low),
        ("status_code", Col::U16),
        ("error", Col::Text),
        ("latency_ms", Col::F64),
        ("duration_ms", Col::F64),
        ("bytes_in", Col::U64),
        ("bytes_out", Col::U64),
    ],
    time: "time",
    order_prefix: &["cluster", "namespace", "user"],
};

const SESSIONS: Table = Table {
    name: "sessions",
    columns: &[
        ("event_id", Col::Str),
        ("session_id", Col::Str),
        ("request_id", Col::Str),
        ("cluster", Col::Low),
        ("node", Col::Low),
        ("user", Col::Str),
        ("groups", Col::Strs),
        ("kind", Col::Low),
        ("protocol", Col::Low),
        ("namespace", Col::Low),
        ("pod", Col::Str),
        ("exec_command", Col::Strs),
        ("exec_container", Col::Str),
        ("exec_stdin", Col::Flag),
        ("exec_tty", Col::Flag),
        ("started", Col::Time),
        ("ended", Col::Time),
        ("bytes_from_client", Col::U64),
        ("bytes_to_client", Col::U64),
        ("end_reason", Col::Text),
    ],
    time: "started",
    order_prefix: &["cluster", "namespace", "user"],
};

// Created now so later issues (recording, eBPF, approvals) only fill them.
const SESSION_CHUNKS: Table = Table {
    name: "session_chunks",
    columns: &[
        ("event_id", Col::Str),
        ("session_id", Col::Str),
        ("cluster", Col::Low),
        ("namespace", Col::Low),
        ("user", Col::Str),
        ("time", Col::Time),
        ("seq", Col::U64),
        ("stream", Col::Low),
        ("data", Col::Text),
    ],
    time: "time",
    order_prefix: &["cluster", "namespace", "user", "session_id"],
};

const PROCESS_EVENTS: Table = Table {
    name: "process_events",
    columns: &[
        ("event_id", Col::Str),
        ("cluster", Col::Low),
        ("node", Col::Low),
        ("namespace", Col::Low),
        ("pod", Col::Str),
        ("pod_uid", Col::Str),
        ("container", Col::Low),
        ("session_id", Col::Str),
        ("time", Col::Time),
        ("kind", Col::Low),
        ("pid", Col::U32),
        ("ppid", Col::U32),
        ("uid", Col::U32),
        ("comm", Col::Low),
        ("exe", Col::Str),
        ("argv", Col::Strs),
        ("exit_code", Col::U32),
    ],
    time: "time",
    order_prefix: &["cluster", "namespace", "pod_uid"],
};

const NETWORK_EVENTS: Table = Table {
    name: "network_events",
    columns: &[
        ("event_id", Col::Str),
        ("cluster", Col::Low),
        ("node", Col::Low),
        ("namespace", Col::Low),
        ("pod", Col::Str),
        ("pod_uid", Col::Str),
        ("container", Col::Low),
        ("session_id", Col::Str),
        ("time", Col::Time),
        ("kind", Col::Low),
        ("pid", Col::U32),
        ("comm", Col::Low),
        ("protocol", Col::Low),
        ("src_addr", Col::Str),
        ("src_port", Col::U16),
        ("dst_addr", Col::Str),
        ("dst_port", Col::U16),
        ("bytes_sent", Col::U64),
        ("bytes_received", Col::U64),
    ],
    time: "time",
    order_prefix: &["cluster", "namespace", "pod_uid"],
};

const APPROVALS: Table = Table {
    name: "approvals",
    columns: &[
        ("event_id", Col::Str),
        ("approval_id", Col::Str),
        ("request_id", Col::Str),
        ("session_id", Col::Str),
        ("cluster", Col::Low),
        ("namespace", Col::Low),
        ("user", Col::Str),
        ("time", Col::Time),
        ("state", Col::Low),
        ("approver", Col::Str),
        ("reason", Col::Text),
    ],
    time: "time",
    order_prefix: &["cluster", "namespace", "user"],
};

/// The bookkeeping table: one row per applied migration. Plain MergeTree works everywhere.
pub const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS `schema_migrations` (\
     `version` UInt32, `name` String, `applied_at` DateTime) \
     ENGINE = MergeTree() ORDER BY version";

/// One schema step. Statements are idempotent (`IF NOT EXISTS`), so a step interrupted
/// half-way (or raced by a second collector) is simply applied again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Strictly increasing from 1.
    pub version: u32,
    /// What it does, stored next to the version.
    pub name: &'static str,
    /// DDL for this server.
    pub statements: Vec<String>,
    /// Columns added to existing tables, each applied only if `system.columns` does not
    /// list it yet (18.16 has no `ADD COLUMN IF NOT EXISTS`), so a step is re-runnable.
    pub added_columns: Vec<AddedColumn>,
}

/// One `ALTER TABLE ... ADD COLUMN` of a migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedColumn {
    /// Table.
    pub table: &'static str,
    /// Column name.
    pub column: &'static str,
    /// The `ALTER TABLE` statement for this server.
    pub statement: String,
}

/// Every migration, in order, rendered for a server with `features`.
pub fn migrations(features: ServerFeatures, settings: SchemaSettings) -> Vec<Migration> {
    let first = Migration {
        version: 1,
        name: "timeline tables",
        statements: [
            &API_REQUESTS,
            &SESSIONS,
            &SESSION_CHUNKS,
            &PROCESS_EVENTS,
            &NETWORK_EVENTS,
            &APPROVALS,
        ]
        .iter()
        .map(|t| create_table(t, features, settings))
        .collect(),
        added_columns: Vec::new(),
    };
    // Appended columns: the row types add them at the end, in this order.
    let recording = Migration {
        version: 2,
        name: "session recording fields",
        statements: Vec::new(),
        added_columns: SESSION_RECORDING_COLUMNS
            .iter()
            .map(|(name, col)| AddedColumn {
                table: "sessions",
                column: name,
                statement: format!(
                    "ALTER TABLE `sessions` ADD COLUMN `{name}` {}",
                    render(*col, features)
                ),
            })
            .collect(),
    };
    vec![first, recording]
}

/// Columns migration 2 adds to `sessions` (the recording fields of `SessionEndEvent`;
/// `exited` says whether `exit_code` is known, `ports` is the port-forward list as JSON).
const SESSION_RECORDING_COLUMNS: &[(&str, Col)] = &[
    ("duration_ms", Col::F64),
    ("exited", Col::Flag),
    ("exit_code", Col::I32),
    ("terminal", Col::Low),
    ("stdin_bytes", Col::U64),
    ("output_bytes", Col::U64),
    ("recording_chunks", Col::U64),
    ("ports", Col::Text),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_map_to_features() {
        assert_eq!(
            ServerFeatures::from_version("18.16.1"),
            ServerFeatures::LEGACY
        );
        assert_eq!(
            ServerFeatures::from_version("24.8.4.13"),
            ServerFeatures::MODERN
        );
        let mid = ServerFeatures::from_version("19.17.4.11");
        assert!(mid.ttl && mid.low_cardinality && !mid.datetime64 && !mid.codecs);
        assert_eq!(
            ServerFeatures::from_version("garbage"),
            ServerFeatures::LEGACY
        );
        assert_eq!(ServerFeatures::from_version(""), ServerFeatures::LEGACY);
    }

    #[test]
    fn legacy_ddl_uses_plain_types_only() {
        let all = migrations(ServerFeatures::LEGACY, SchemaSettings::default());
        let sql = all[0].statements.join("\n");
        for modern in ["DateTime64", "LowCardinality", "TTL", "CODEC"] {
            assert!(!sql.contains(modern), "{modern} in legacy DDL:\n{sql}");
        }
        assert!(sql.contains("`time` DateTime('UTC')"), "{sql}");
        assert!(sql.contains("PARTITION BY toDate(`time`)"), "{sql}");
        assert!(
            sql.contains("ORDER BY (cluster, namespace, user, time, event_id)"),
            "{sql}"
        );
    }

    #[test]
    fn modern_ddl_uses_datetime64_lowcardinality_ttl_and_codecs() {
        let settings = SchemaSettings { retention_days: 30 };
        let all = migrations(ServerFeatures::MODERN, settings);
        let api = &all[0].statements[0];
        assert!(api.starts_with("CREATE TABLE IF NOT EXISTS `api_requests`"));
        assert!(
            api.contains("`time` DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1))"),
            "{api}"
        );
        assert!(api.contains("`verb` LowCardinality(String)"), "{api}");
        assert!(
            api.contains("`groups` Array(LowCardinality(String))"),
            "{api}"
        );
        assert!(api.contains("`path` String CODEC(ZSTD(3))"), "{api}");
        assert!(
            api.ends_with("TTL toDateTime(`time`) + INTERVAL 30 DAY"),
            "{api}"
        );
        let sessions = &all[0].statements[1];
        assert!(
            sessions.contains("PARTITION BY toDate(`started`)"),
            "{sessions}"
        );
    }

    #[test]
    fn every_issue_table_is_created_and_versions_increase() {
        let all = migrations(ServerFeatures::LEGACY, SchemaSettings::default());
        let sql = all
            .iter()
            .flat_map(|m| m.statements.iter())
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        for table in [
            "api_requests",
            "sessions",
            "session_chunks",
            "process_events",
            "network_events",
            "approvals",
        ] {
            assert!(sql.contains(&format!("IF NOT EXISTS `{table}`")), "{table}");
        }
        for (i, m) in all.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
        }
    }
}
