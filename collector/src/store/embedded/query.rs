//! [`AuditQuery`] on the embedded store: filters as bound parameters, newest first by
//! `(time, event_id)`, keyset pagination (`(time, event_id) < cursor`), one row more than
//! the page to know whether another page follows.

use super::{EmbeddedError, EmbeddedStore};
use crate::store::StoreError;
use crate::store::query::{
    AuditQuery, Cursor, Page, PageRequest, RequestFilter, SessionDetail, SessionFilter,
};
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use gatehouse_common::audit::{ApiRequestEvent, SessionChunkEvent, SessionEndEvent};
use rusqlite::Connection;
use rusqlite::types::Value;
use serde::de::DeserializeOwned;

/// A `WHERE` clause under construction: conditions joined by `AND`, values bound by number.
#[derive(Default)]
struct Where {
    conditions: Vec<String>,
    values: Vec<Value>,
}

impl Where {
    /// Adds `condition`, where `?` stands for `value`.
    fn push(&mut self, condition: &str, value: Value) {
        self.values.push(value);
        let n = self.values.len();
        self.conditions
            .push(condition.replace('?', &format!("?{n}")));
    }

    fn text(&mut self, column: &str, value: &Option<String>) {
        if let Some(v) = value {
            self.push(&format!("{column} = ?"), Value::Text(v.clone()));
        }
    }

    fn range(&mut self, column: &str, since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) {
        if let Some(t) = since {
            self.push(
                &format!("{column} >= ?"),
                Value::Integer(t.timestamp_micros()),
            );
        }
        if let Some(t) = until {
            self.push(
                &format!("{column} < ?"),
                Value::Integer(t.timestamp_micros()),
            );
        }
    }

    fn group(&mut self, group: &Option<String>) {
        if let Some(g) = group {
            self.push(
                "EXISTS (SELECT 1 FROM json_each(\"groups\") WHERE json_each.value = ?)",
                Value::Text(g.clone()),
            );
        }
    }

    fn after(&mut self, column: &str, cursor: &Option<Cursor>) {
        if let Some(c) = cursor {
            self.values.push(Value::Integer(c.time_micros));
            self.values.push(Value::Text(c.event_id.clone()));
            let n = self.values.len();
            self.conditions
                .push(format!("({column}, event_id) < (?{}, ?{n})", n - 1));
        }
    }

    /// `SELECT event, <time>, event_id FROM table WHERE ... ORDER BY ... LIMIT`.
    fn select(mut self, table: &str, time: &str, limit: u32) -> (String, Vec<Value>) {
        let filter = if self.conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conditions.join(" AND "))
        };
        self.values.push(Value::Integer(i64::from(limit) + 1));
        let sql = format!(
            "SELECT event, {time}, event_id FROM {table}{filter} \
             ORDER BY {time} DESC, event_id DESC LIMIT ?{}",
            self.values.len()
        );
        (sql, self.values)
    }
}

/// Runs a page query and builds the page (`limit` items, `next` when more exist).
fn page<T: DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    values: Vec<Value>,
    limit: u32,
) -> Result<Page<T>, EmbeddedError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(values), |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut items = Vec::new();
    let mut last = None;
    let mut more = false;
    for row in rows {
        let (json, time_micros, event_id) = row?;
        if items.len() == limit as usize {
            more = true;
            break;
        }
        items.push(serde_json::from_str(&json)?);
        last = Some(Cursor {
            time_micros,
            event_id,
        });
    }
    Ok(Page {
        items,
        next: if more { last } else { None },
    })
}

fn requests_page(
    conn: &Connection,
    filter: &RequestFilter,
    req: &PageRequest,
) -> Result<Page<ApiRequestEvent>, EmbeddedError> {
    let mut w = Where::default();
    w.text("user", &filter.user);
    w.group(&filter.group);
    w.text("verb", &filter.verb);
    w.text("resource", &filter.resource);
    w.text("namespace", &filter.namespace);
    w.text("name", &filter.name);
    w.text("decision", &filter.decision);
    if let Some(status) = filter.status {
        w.push("status_code = ?", Value::Integer(i64::from(status)));
    }
    w.text("session_id", &filter.session_id);
    w.range("time_us", filter.since, filter.until);
    w.after("time_us", &req.after);
    let limit = req.effective_limit();
    let (sql, values) = w.select("api_requests", "time_us", limit);
    page(conn, &sql, values, limit)
}

fn sessions_page(
    conn: &Connection,
    filter: &SessionFilter,
    req: &PageRequest,
) -> Result<Page<SessionEndEvent>, EmbeddedError> {
    let mut w = Where::default();
    w.text("user", &filter.user);
    w.text("namespace", &filter.namespace);
    w.text("pod", &filter.pod);
    w.text("kind", &filter.kind);
    w.range("started_us", filter.since, filter.until);
    w.after("started_us", &req.after);
    let limit = req.effective_limit();
    let (sql, values) = w.select("sessions", "started_us", limit);
    page(conn, &sql, values, limit)
}

fn session_detail(
    conn: &Connection,
    session_id: &str,
) -> Result<Option<SessionDetail>, EmbeddedError> {
    let mut stmt = conn.prepare_cached(
        "SELECT event FROM sessions WHERE session_id = ?1 \
         ORDER BY started_us DESC, event_id DESC LIMIT 1",
    )?;
    let mut rows = stmt.query([session_id])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let session: SessionEndEvent = serde_json::from_str(&row.get::<_, String>(0)?)?;
    let mut stmt = conn.prepare_cached(
        "SELECT event FROM api_requests WHERE session_id = ?1 ORDER BY time_us, event_id",
    )?;
    let requests = stmt
        .query_map([session_id], |r| r.get::<_, String>(0))?
        .map(|json| Ok(serde_json::from_str(&json?)?))
        .collect::<Result<Vec<ApiRequestEvent>, EmbeddedError>>()?;
    Ok(Some(SessionDetail { session, requests }))
}

fn session_chunks(
    conn: &Connection,
    session_id: &str,
) -> Result<Vec<SessionChunkEvent>, EmbeddedError> {
    let mut stmt = conn.prepare_cached(
        "SELECT event FROM session_chunks WHERE session_id = ?1 ORDER BY seq, event_id",
    )?;
    stmt.query_map([session_id], |r| r.get::<_, String>(0))?
        .map(|json| Ok(serde_json::from_str(&json?)?))
        .collect()
}

impl AuditQuery for EmbeddedStore {
    fn requests<'a>(
        &'a self,
        filter: &'a RequestFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, Result<Page<ApiRequestEvent>, StoreError>> {
        let (filter, page) = (filter.clone(), page.clone());
        Box::pin(self.run(false, move |conn| requests_page(conn, &filter, &page)))
    }

    fn sessions<'a>(
        &'a self,
        filter: &'a SessionFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, Result<Page<SessionEndEvent>, StoreError>> {
        let (filter, page) = (filter.clone(), page.clone());
        Box::pin(self.run(false, move |conn| sessions_page(conn, &filter, &page)))
    }

    fn session<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SessionDetail>, StoreError>> {
        let session_id = session_id.to_string();
        Box::pin(self.run(false, move |conn| session_detail(conn, &session_id)))
    }

    fn session_chunks<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SessionChunkEvent>, StoreError>> {
        let session_id = session_id.to_string();
        Box::pin(self.run(false, move |conn| session_chunks(conn, &session_id)))
    }
}
