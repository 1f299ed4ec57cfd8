//! [`AuditQuery`] for the ClickHouse store: filtered keyset pages newest first, read back
//! into audit events, on 18.16 (`DateTime` seconds) and modern servers (`DateTime64(6)`).
//!
//! - Every filter value is bound through the client's `?` placeholders, which escape it as
//!   a SQL string literal; only fixed column names and operators are formatted in.
//! - Tables are `ReplacingMergeTree`, so a copy not yet folded by a merge must never show
//!   twice: a requests page first selects `DISTINCT (time, event_id)` keys (two columns,
//!   cheap), then reads those rows by id and keeps one per id; sessions use `FINAL`.
//! - Pages are `(time, event_id) < cursor` written out as `time < t OR (time = t AND
//!   event_id < id)` (18.16 has no tuple comparison), `ORDER BY time DESC, event_id DESC
//!   LIMIT n+1`: the extra row says whether there is a next page, without a `count()`.

use super::StoreError;
use super::clickhouse::ClickHouseStore;
use super::query::{
    AuditQuery, Cursor, Page, PageRequest, RequestFilter, SessionDetail, SessionFilter,
};
use ::clickhouse::Row;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use gatehouse_common::audit::{ApiRequestEvent, ExecParams, SessionChunkEvent, SessionEndEvent};
use serde::Deserialize;

/// Most API calls returned with one session (an exec session has one: its upgrade).
const SESSION_REQUESTS_MAX: u32 = super::query::MAX_PAGE;

/// One bound value of a query.
#[derive(Debug, Clone)]
enum Arg {
    Str(String),
    I64(i64),
}

/// A `WHERE` clause under construction: fixed SQL text with `?`s and their values in order.
#[derive(Debug, Default)]
struct Where {
    clauses: Vec<String>,
    args: Vec<Arg>,
}

impl Where {
    fn push(&mut self, sql: impl Into<String>, args: impl IntoIterator<Item = Arg>) {
        self.clauses.push(sql.into());
        self.args.extend(args);
    }

    fn eq(&mut self, column: &str, value: &Option<String>) {
        if let Some(v) = value {
            self.push(format!("`{column}` = ?"), [Arg::Str(v.clone())]);
        }
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// How one server flavour writes times in SQL.
#[derive(Debug, Clone, Copy)]
struct TimeSql {
    datetime64: bool,
}

impl TimeSql {
    /// The column as microseconds since the epoch (what rows are read back with).
    fn micros(self, column: &str) -> String {
        if self.datetime64 {
            format!("toUnixTimestamp64Micro(`{column}`)")
        } else {
            format!("toInt64(`{column}`) * 1000000")
        }
    }

    /// A placeholder for a time, and its bound value, comparable with the column.
    /// `round_up`: on second columns, a fractional bound rounds up (for exclusive `<`).
    fn bound(self, micros: i64, round_up: bool) -> (&'static str, Arg) {
        if self.datetime64 {
            ("fromUnixTimestamp64Micro(toInt64(?))", Arg::I64(micros))
        } else {
            let secs = if round_up {
                micros.div_euclid(1_000_000) + i64::from(micros.rem_euclid(1_000_000) != 0)
            } else {
                micros.div_euclid(1_000_000)
            };
            (
                "toDateTime(?)",
                Arg::I64(secs.clamp(0, i64::from(u32::MAX))),
            )
        }
    }

    fn since(self, w: &mut Where, column: &str, t: Option<DateTime<Utc>>) {
        if let Some(t) = t {
            let (ph, arg) = self.bound(t.timestamp_micros(), false);
            w.push(format!("`{column}` >= {ph}"), [arg]);
        }
    }

    fn until(self, w: &mut Where, column: &str, t: Option<DateTime<Utc>>) {
        if let Some(t) = t {
            let (ph, arg) = self.bound(t.timestamp_micros(), true);
            w.push(format!("`{column}` < {ph}"), [arg]);
        }
    }

    /// `(column, event_id) < (cursor)`.
    fn after(self, w: &mut Where, column: &str, cursor: &Option<Cursor>) {
        if let Some(c) = cursor {
            let (ph, arg) = self.bound(c.time_micros, false);
            w.push(
                format!("(`{column}` < {ph} OR (`{column}` = {ph} AND event_id < ?))"),
                [arg.clone(), arg, Arg::Str(c.event_id.clone())],
            );
        }
    }
}

fn bind_all(mut q: ::clickhouse::query::Query, args: &[Arg]) -> ::clickhouse::query::Query {
    for a in args {
        q = match a {
            Arg::Str(s) => q.bind(s.as_str()),
            Arg::I64(n) => q.bind(*n),
        };
    }
    q
}

fn time_from_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// Reads an enum back from its stored wire name (unknown names get the default).
fn from_name<T: serde::de::DeserializeOwned + Default>(name: &str) -> T {
    serde_json::from_value(serde_json::Value::String(name.to_string())).unwrap_or_default()
}

/// An `api_requests` row as read back (the time as microseconds, see [`TimeSql::micros`]).
#[derive(Debug, Deserialize, Row)]
struct RequestRead {
    event_id: String,
    request_id: String,
    session_id: String,
    time_micros: i64,
    cluster: String,
    node: String,
    user: String,
    groups: Vec<String>,
    auth_method: String,
    source: String,
    user_agent: String,
    method: String,
    path: String,
    query: String,
    is_resource_request: u8,
    verb: String,
    api_group: String,
    api_version: String,
    resource: String,
    subresource: String,
    namespace: String,
    name: String,
    exec_command: Vec<String>,
    exec_container: String,
    exec_stdin: u8,
    exec_tty: u8,
    decision: String,
    decided_by: String,
    answered_by: String,
    status_code: u16,
    error: String,
    latency_ms: f64,
    duration_ms: f64,
    bytes_in: u64,
    bytes_out: u64,
}

fn request_columns(t: TimeSql) -> String {
    format!(
        "event_id, request_id, session_id, {time}, cluster, node, `user`, `groups`, \
         auth_method, source, user_agent, method, path, `query`, is_resource_request, verb, \
         api_group, api_version, resource, subresource, namespace, `name`, exec_command, \
         exec_container, exec_stdin, exec_tty, decision, decided_by, answered_by, status_code, \
         `error`, latency_ms, duration_ms, bytes_in, bytes_out",
        time = t.micros("time")
    )
}

impl From<RequestRead> for ApiRequestEvent {
    fn from(r: RequestRead) -> Self {
        // The agent fills `exec` for exec and attach requests only.
        let exec = matches!(r.subresource.as_str(), "exec" | "attach").then(|| ExecParams {
            command: r.exec_command,
            container: r.exec_container,
            stdin: r.exec_stdin != 0,
            tty: r.exec_tty != 0,
        });
        Self {
            event_id: r.event_id,
            request_id: r.request_id,
            session_id: (!r.session_id.is_empty()).then_some(r.session_id),
            time: time_from_micros(r.time_micros),
            cluster: r.cluster,
            node: r.node,
            user: r.user,
            groups: r.groups,
            auth_method: from_name(&r.auth_method),
            source: r.source,
            user_agent: r.user_agent,
            method: r.method,
            path: r.path,
            query: r.query,
            is_resource_request: r.is_resource_request != 0,
            verb: r.verb,
            api_group: r.api_group,
            api_version: r.api_version,
            resource: r.resource,
            subresource: r.subresource,
            namespace: r.namespace,
            name: r.name,
            exec,
            decision: from_name(&r.decision),
            decided_by: r.decided_by,
            policy: None,
            answered_by: from_name(&r.answered_by),
            status_code: r.status_code,
            error: r.error,
            latency_ms: r.latency_ms,
            duration_ms: r.duration_ms,
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
        }
    }
}

/// A `sessions` row as read back.
#[derive(Debug, Deserialize, Row)]
struct SessionRead {
    event_id: String,
    session_id: String,
    request_id: String,
    cluster: String,
    node: String,
    user: String,
    groups: Vec<String>,
    kind: String,
    protocol: String,
    namespace: String,
    pod: String,
    exec_command: Vec<String>,
    exec_container: String,
    exec_stdin: u8,
    exec_tty: u8,
    started_micros: i64,
    ended_micros: i64,
    bytes_from_client: u64,
    bytes_to_client: u64,
    end_reason: String,
    duration_ms: f64,
    exited: u8,
    exit_code: i32,
    terminal: String,
    stdin_bytes: u64,
    output_bytes: u64,
    recording_chunks: u64,
    ports: String,
}

fn session_columns(t: TimeSql) -> String {
    format!(
        "event_id, session_id, request_id, cluster, node, `user`, `groups`, kind, protocol, \
         namespace, pod, exec_command, exec_container, exec_stdin, exec_tty, {started}, \
         {ended}, bytes_from_client, bytes_to_client, end_reason, duration_ms, exited, \
         exit_code, terminal, stdin_bytes, output_bytes, recording_chunks, ports",
        started = t.micros("started"),
        ended = t.micros("ended"),
    )
}

impl From<SessionRead> for SessionEndEvent {
    fn from(r: SessionRead) -> Self {
        let exec = matches!(r.kind.as_str(), "exec" | "attach").then(|| ExecParams {
            command: r.exec_command,
            container: r.exec_container,
            stdin: r.exec_stdin != 0,
            tty: r.exec_tty != 0,
        });
        Self {
            event_id: r.event_id,
            session_id: r.session_id,
            request_id: r.request_id,
            cluster: r.cluster,
            node: r.node,
            user: r.user,
            groups: r.groups,
            kind: from_name(&r.kind),
            protocol: r.protocol,
            namespace: r.namespace,
            pod: r.pod,
            exec,
            started: time_from_micros(r.started_micros),
            ended: time_from_micros(r.ended_micros),
            bytes_from_client: r.bytes_from_client,
            bytes_to_client: r.bytes_to_client,
            end_reason: r.end_reason,
            duration_ms: r.duration_ms,
            exit_code: (r.exited != 0).then_some(r.exit_code),
            terminal: r.terminal,
            stdin_bytes: r.stdin_bytes,
            output_bytes: r.output_bytes,
            recording_chunks: r.recording_chunks,
            ports: serde_json::from_str(&r.ports).unwrap_or_default(),
        }
    }
}

/// A `session_chunks` row as read back.
#[derive(Debug, Deserialize, Row)]
struct ChunkRead {
    event_id: String,
    session_id: String,
    cluster: String,
    namespace: String,
    user: String,
    time_micros: i64,
    seq: u64,
    stream: String,
    data: String,
}

/// The `WHERE` of a requests page (filters and cursor).
fn request_where(t: TimeSql, f: &RequestFilter, after: &Option<Cursor>) -> Where {
    let mut w = Where::default();
    w.eq("user", &f.user);
    if let Some(g) = &f.group {
        w.push("has(`groups`, ?)", [Arg::Str(g.clone())]);
    }
    w.eq("verb", &f.verb);
    w.eq("resource", &f.resource);
    w.eq("namespace", &f.namespace);
    w.eq("name", &f.name);
    w.eq("decision", &f.decision);
    if let Some(s) = f.status {
        w.push("status_code = ?", [Arg::I64(i64::from(s))]);
    }
    w.eq("session_id", &f.session_id);
    t.since(&mut w, "time", f.since);
    t.until(&mut w, "time", f.until);
    t.after(&mut w, "time", after);
    w
}

fn session_where(t: TimeSql, f: &SessionFilter, after: &Option<Cursor>) -> Where {
    let mut w = Where::default();
    w.eq("user", &f.user);
    w.eq("namespace", &f.namespace);
    w.eq("pod", &f.pod);
    w.eq("kind", &f.kind);
    t.since(&mut w, "started", f.since);
    t.until(&mut w, "started", f.until);
    t.after(&mut w, "started", after);
    w
}

/// Cuts the `LIMIT n+1` result to `n` and derives the next cursor from the last item kept.
fn into_page<T>(mut items: Vec<T>, limit: u32, key: impl Fn(&T) -> Cursor) -> Page<T> {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next = if more { items.last().map(key) } else { None };
    Page { items, next }
}

impl ClickHouseStore {
    async fn query_requests(
        &self,
        filter: &RequestFilter,
        page: &PageRequest,
    ) -> Result<Page<ApiRequestEvent>, StoreError> {
        let ready = self.ready().await?;
        let t = TimeSql {
            datetime64: ready.features.datetime64,
        };
        let limit = page.effective_limit();
        // Step 1: the page's sort keys only. Reading two columns (plus the filtered ones)
        // instead of all 35 under FINAL is what keeps a page fast on a large table;
        // DISTINCT folds a not-yet-merged copy (same time, same event_id).
        let w = request_where(t, filter, &page.after);
        let sql = format!(
            "SELECT {micros}, event_id FROM (SELECT DISTINCT time, event_id FROM api_requests{w} \
             ORDER BY time DESC, event_id DESC LIMIT {n})",
            micros = t.micros("time"),
            w = w.sql(),
            n = u64::from(limit) + 1,
        );
        let mut keys = bind_all(ready.client.query(&sql), &w.args)
            .fetch_all::<(i64, String)>()
            .await?;
        keys.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
        let more = keys.len() > limit as usize;
        keys.truncate(limit as usize);
        let next = more.then(|| keys.last()).flatten().map(|(t, id)| Cursor {
            time_micros: *t,
            event_id: id.clone(),
        });
        let (Some(newest), Some(oldest)) = (keys.first(), keys.last()) else {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        };
        // Step 2: those rows, found by id within the page's time span (partition pruning).
        let (lo_ph, lo) = t.bound(oldest.0, false);
        let (hi_ph, hi) = t.bound(newest.0, false);
        let sql = format!(
            "SELECT {cols} FROM api_requests WHERE time >= {lo_ph} AND time <= {hi_ph} \
             AND event_id IN (SELECT arrayJoin(?))",
            cols = request_columns(t),
        );
        let ids: Vec<&str> = keys.iter().map(|(_, id)| id.as_str()).collect();
        let rows = bind_all(ready.client.query(&sql), &[lo, hi])
            .bind(&ids)
            .fetch_all::<RequestRead>()
            .await?;
        let mut by_id: std::collections::HashMap<String, RequestRead> =
            rows.into_iter().map(|r| (r.event_id.clone(), r)).collect();
        // Key order, each id once; an id gone between the steps (only a merge could do
        // that, and it keeps one copy) is simply skipped.
        let items = keys
            .iter()
            .filter_map(|(_, id)| by_id.remove(id))
            .map(ApiRequestEvent::from)
            .collect();
        Ok(Page { items, next })
    }

    async fn query_sessions(
        &self,
        filter: &SessionFilter,
        page: &PageRequest,
    ) -> Result<Page<SessionEndEvent>, StoreError> {
        let ready = self.ready().await?;
        let t = TimeSql {
            datetime64: ready.features.datetime64,
        };
        let limit = page.effective_limit();
        let w = session_where(t, filter, &page.after);
        let sql = format!(
            "SELECT {cols} FROM sessions FINAL{w} \
             ORDER BY started DESC, event_id DESC LIMIT {n}",
            cols = session_columns(t),
            w = w.sql(),
            n = u64::from(limit) + 1,
        );
        let rows = bind_all(ready.client.query(&sql), &w.args)
            .fetch_all::<SessionRead>()
            .await?;
        let items = rows.into_iter().map(SessionEndEvent::from).collect();
        Ok(into_page(items, limit, |e: &SessionEndEvent| Cursor {
            time_micros: cursor_micros(e.started, t),
            event_id: e.event_id.clone(),
        }))
    }

    async fn query_session(&self, session_id: &str) -> Result<Option<SessionDetail>, StoreError> {
        let ready = self.ready().await?;
        let t = TimeSql {
            datetime64: ready.features.datetime64,
        };
        let sql = format!(
            "SELECT {cols} FROM sessions FINAL WHERE session_id = ? \
             ORDER BY started DESC, event_id DESC LIMIT 1",
            cols = session_columns(t)
        );
        let Some(row) = ready
            .client
            .query(&sql)
            .bind(session_id)
            .fetch_optional::<SessionRead>()
            .await?
        else {
            return Ok(None);
        };
        // Its calls through the requests page (cheap key step first), oldest first.
        let filter = RequestFilter {
            session_id: Some(session_id.to_string()),
            ..RequestFilter::default()
        };
        let page = PageRequest {
            limit: SESSION_REQUESTS_MAX,
            after: None,
        };
        let mut requests = self.query_requests(&filter, &page).await?.items;
        requests.reverse();
        Ok(Some(SessionDetail {
            session: row.into(),
            requests,
        }))
    }
}

/// The cursor time of a row: exactly what the column holds (whole seconds on 18.16).
fn cursor_micros(time: DateTime<Utc>, t: TimeSql) -> i64 {
    let micros = time.timestamp_micros();
    if t.datetime64 {
        micros
    } else {
        micros.div_euclid(1_000_000) * 1_000_000
    }
}

impl AuditQuery for ClickHouseStore {
    fn requests<'a>(
        &'a self,
        filter: &'a RequestFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, Result<Page<ApiRequestEvent>, StoreError>> {
        Box::pin(self.bounded(self.query_requests(filter, page)))
    }

    fn sessions<'a>(
        &'a self,
        filter: &'a SessionFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, Result<Page<SessionEndEvent>, StoreError>> {
        Box::pin(self.bounded(self.query_sessions(filter, page)))
    }

    fn session<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SessionDetail>, StoreError>> {
        Box::pin(self.bounded(self.query_session(session_id)))
    }

    fn session_chunks<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SessionChunkEvent>, StoreError>> {
        Box::pin(self.bounded(async move {
            let ready = self.ready().await?;
            let t = TimeSql {
                datetime64: ready.features.datetime64,
            };
            // FINAL: an unmerged duplicate row must not repeat a chunk.
            let sql = format!(
                "SELECT event_id, session_id, cluster, namespace, `user`, {time}, seq, stream, \
                 data FROM session_chunks FINAL WHERE session_id = ? ORDER BY seq, event_id",
                time = t.micros("time"),
            );
            let rows = ready
                .client
                .query(&sql)
                .bind(session_id)
                .fetch_all::<ChunkRead>()
                .await?;
            Ok(rows
                .into_iter()
                .map(|r| SessionChunkEvent {
                    event_id: r.event_id,
                    session_id: r.session_id,
                    cluster: r.cluster,
                    namespace: r.namespace,
                    user: r.user,
                    time: time_from_micros(r.time_micros),
                    seq: r.seq,
                    stream: r.stream,
                    data: r.data,
                })
                .collect())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_are_bound_not_formatted() {
        let f = RequestFilter {
            user: Some("a' OR 1=1 --".into()),
            group: Some("g\\".into()),
            status: Some(403),
            ..RequestFilter::default()
        };
        let w = request_where(TimeSql { datetime64: false }, &f, &None);
        let sql = w.sql();
        assert!(!sql.contains("OR 1=1"), "{sql}");
        assert_eq!(sql.matches('?').count(), w.args.len(), "{sql}");
    }

    #[test]
    fn legacy_cursor_compares_whole_seconds() {
        let c = Some(Cursor {
            time_micros: 1_700_000_000_000_000,
            event_id: "e".into(),
        });
        let w = request_where(TimeSql { datetime64: false }, &RequestFilter::default(), &c);
        assert_eq!(
            w.sql(),
            " WHERE (`time` < toDateTime(?) OR (`time` = toDateTime(?) AND event_id < ?))"
        );
        assert!(matches!(w.args[0], Arg::I64(1_700_000_000)));
    }

    #[test]
    fn legacy_until_rounds_up_a_fraction() {
        let t = TimeSql { datetime64: false };
        assert!(matches!(t.bound(1_500_000, true).1, Arg::I64(2)));
        assert!(matches!(t.bound(1_500_000, false).1, Arg::I64(1)));
        assert!(matches!(t.bound(2_000_000, true).1, Arg::I64(2)));
    }
}
