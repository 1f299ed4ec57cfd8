//! An in-memory [`AuditStore`] for tests of the ingest path (can be switched "down"), and
//! its [`AuditQuery`] for tests of the query API (same ordering and cursors as ClickHouse).

use super::query::{
    AuditQuery, Cursor, Page, PageRequest, RequestFilter, SessionDetail, SessionFilter,
};
use super::{AuditStore, InsertOutcome, StoreError};
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use gatehouse_common::audit::{ApiRequestEvent, AuditEvent, SessionChunkEvent, SessionEndEvent};
use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Events kept in a `Vec`, deduplicated by `event_id`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    events: Mutex<(HashSet<String>, Vec<AuditEvent>)>,
    down: AtomicBool,
}

impl MemoryStore {
    /// An empty, available store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every call fail (`true`) or succeed again (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// A copy of the stored events, in insertion order.
    pub fn events(&self) -> Vec<AuditEvent> {
        match self.events.lock() {
            Ok(guard) => guard.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("memory store switched down".into()))
        } else {
            Ok(())
        }
    }
}

impl AuditStore for MemoryStore {
    fn insert<'a>(
        &'a self,
        events: &'a [AuditEvent],
    ) -> BoxFuture<'a, Result<InsertOutcome, StoreError>> {
        Box::pin(async move {
            self.check()?;
            let mut guard = match self.events.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            let (seen, stored) = &mut *guard;
            let mut outcome = InsertOutcome::default();
            for e in events {
                if seen.insert(e.event_id().to_string()) {
                    stored.push(e.clone());
                    outcome.inserted += 1;
                } else {
                    outcome.duplicates += 1;
                }
            }
            Ok(outcome)
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.check() })
    }
}

fn matches(want: &Option<String>, have: &str) -> bool {
    want.as_deref().is_none_or(|w| w == have)
}

fn in_range(t: DateTime<Utc>, since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> bool {
    since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u)
}

fn request_matches(f: &RequestFilter, e: &ApiRequestEvent) -> bool {
    matches(&f.user, &e.user)
        && f.group.as_ref().is_none_or(|g| e.groups.contains(g))
        && matches(&f.verb, &e.verb)
        && matches(&f.resource, &e.resource)
        && matches(&f.namespace, &e.namespace)
        && matches(&f.name, &e.name)
        && matches(&f.decision, e.decision.as_str())
        && f.status.is_none_or(|s| s == e.status_code)
        && matches(&f.session_id, e.session_id.as_deref().unwrap_or(""))
        && in_range(e.time, f.since, f.until)
}

fn kind_name(e: &SessionEndEvent) -> String {
    match serde_json::to_value(e.kind) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

fn session_matches(f: &SessionFilter, e: &SessionEndEvent) -> bool {
    matches(&f.user, &e.user)
        && matches(&f.namespace, &e.namespace)
        && matches(&f.pod, &e.pod)
        && matches(&f.kind, &kind_name(e))
        && in_range(e.started, f.since, f.until)
}

/// Newest first by `(time, event_id)`, strictly after `page.after`, `limit` of them.
fn paginate<T: Clone>(mut items: Vec<(i64, String, T)>, page: &PageRequest) -> Page<T> {
    items.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
    let after = page.after.as_ref();
    let limit = page.effective_limit() as usize;
    let mut rest = items.into_iter().filter(|(t, id, _)| {
        after.is_none_or(|c| (*t, id.as_str()) < (c.time_micros, c.event_id.as_str()))
    });
    let kept: Vec<(i64, String, T)> = rest.by_ref().take(limit).collect();
    let next = match (rest.next(), kept.last()) {
        (Some(_), Some((t, id, _))) => Some(Cursor {
            time_micros: *t,
            event_id: id.clone(),
        }),
        _ => None,
    };
    Page {
        items: kept.into_iter().map(|(_, _, e)| e).collect(),
        next,
    }
}

impl AuditQuery for MemoryStore {
    fn requests<'a>(
        &'a self,
        filter: &'a RequestFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, Result<Page<ApiRequestEvent>, StoreError>> {
        Box::pin(async move {
            self.check()?;
            let items = self
                .events()
                .into_iter()
                .filter_map(|e| match e {
                    AuditEvent::ApiRequest(r) if request_matches(filter, &r) => {
                        Some((r.time.timestamp_micros(), r.event_id.clone(), r))
                    }
                    _ => None,
                })
                .collect();
            Ok(paginate(items, page))
        })
    }

    fn sessions<'a>(
        &'a self,
        filter: &'a SessionFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, Result<Page<SessionEndEvent>, StoreError>> {
        Box::pin(async move {
            self.check()?;
            let items = self
                .events()
                .into_iter()
                .filter_map(|e| match e {
                    AuditEvent::SessionEnd(s) if session_matches(filter, &s) => {
                        Some((s.started.timestamp_micros(), s.event_id.clone(), s))
                    }
                    _ => None,
                })
                .collect();
            Ok(paginate(items, page))
        })
    }

    fn session_chunks<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SessionChunkEvent>, StoreError>> {
        Box::pin(async move {
            self.check()?;
            let mut chunks: Vec<SessionChunkEvent> = self
                .events()
                .into_iter()
                .filter_map(|e| match e {
                    AuditEvent::SessionChunk(c) if c.session_id == session_id => Some(c),
                    _ => None,
                })
                .collect();
            chunks.sort_by_key(|c| c.seq);
            Ok(chunks)
        })
    }

    fn session<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SessionDetail>, StoreError>> {
        Box::pin(async move {
            self.check()?;
            let events = self.events();
            let Some(session) = events.iter().find_map(|e| match e {
                AuditEvent::SessionEnd(s) if s.session_id == session_id => Some(s.clone()),
                _ => None,
            }) else {
                return Ok(None);
            };
            let mut requests: Vec<ApiRequestEvent> = events
                .into_iter()
                .filter_map(|e| match e {
                    AuditEvent::ApiRequest(r) if r.session_id.as_deref() == Some(session_id) => {
                        Some(r)
                    }
                    _ => None,
                })
                .collect();
            requests.sort_by(|a, b| (a.time, &a.event_id).cmp(&(b.time, &b.event_id)));
            Ok(Some(SessionDetail { session, requests }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_common::audit::Decision;

    fn request(id: &str, secs: i64, user: &str, verb: &str) -> AuditEvent {
        AuditEvent::ApiRequest(ApiRequestEvent {
            event_id: id.into(),
            time: DateTime::from_timestamp(secs, 0).unwrap_or_default(),
            user: user.into(),
            verb: verb.into(),
            groups: vec!["devs".into()],
            decision: if verb == "delete" {
                Decision::Deny
            } else {
                Decision::Allow
            },
            status_code: if verb == "delete" { 403 } else { 200 },
            ..ApiRequestEvent::default()
        })
    }

    async fn store() -> Result<MemoryStore, StoreError> {
        let s = MemoryStore::new();
        // Three events share second 20: the event_id orders them.
        let events = vec![
            request("a", 10, "alice", "get"),
            request("c", 20, "bob", "delete"),
            request("b", 20, "alice", "list"),
            request("d", 20, "alice", "get"),
            request("e", 30, "alice", "get"),
        ];
        s.insert(&events).await?;
        Ok(s)
    }

    fn ids(page: &Page<ApiRequestEvent>) -> Vec<&str> {
        page.items.iter().map(|e| e.event_id.as_str()).collect()
    }

    #[tokio::test]
    async fn pages_are_newest_first_and_cursors_cover_everything_once() -> Result<(), StoreError> {
        let s = store().await?;
        let all = RequestFilter::default();
        let mut page = PageRequest {
            limit: 2,
            after: None,
        };
        let mut seen = Vec::new();
        loop {
            let p = s.requests(&all, &page).await?;
            seen.extend(ids(&p).iter().map(|s| s.to_string()));
            match p.next {
                Some(c) => page.after = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, ["e", "d", "c", "b", "a"]);
        Ok(())
    }

    #[tokio::test]
    async fn filters_combine() -> Result<(), StoreError> {
        let s = store().await?;
        let page = PageRequest::default();
        let f = RequestFilter {
            user: Some("alice".into()),
            verb: Some("get".into()),
            ..RequestFilter::default()
        };
        assert_eq!(ids(&s.requests(&f, &page).await?), ["e", "d", "a"]);
        let f = RequestFilter {
            decision: Some("deny".into()),
            status: Some(403),
            group: Some("devs".into()),
            ..RequestFilter::default()
        };
        assert_eq!(ids(&s.requests(&f, &page).await?), ["c"]);
        let f = RequestFilter {
            since: DateTime::from_timestamp(20, 0),
            until: DateTime::from_timestamp(30, 0),
            ..RequestFilter::default()
        };
        assert_eq!(ids(&s.requests(&f, &page).await?), ["d", "c", "b"]);
        let f = RequestFilter {
            group: Some("nobody".into()),
            ..RequestFilter::default()
        };
        let p = s.requests(&f, &page).await?;
        assert!(p.items.is_empty() && p.next.is_none());
        Ok(())
    }

    #[tokio::test]
    async fn session_detail_joins_its_requests() -> Result<(), StoreError> {
        let s = MemoryStore::new();
        let mut exec = match request("r1", 5, "alice", "create") {
            AuditEvent::ApiRequest(r) => r,
            _ => ApiRequestEvent::default(),
        };
        exec.session_id = Some("s1".into());
        let end = SessionEndEvent {
            event_id: "se1".into(),
            session_id: "s1".into(),
            user: "alice".into(),
            ..SessionEndEvent::default()
        };
        s.insert(&[AuditEvent::ApiRequest(exec), AuditEvent::SessionEnd(end)])
            .await?;
        let detail = s.session("s1").await?;
        assert_eq!(detail.as_ref().map(|d| d.requests.len()), Some(1));
        assert!(s.session("nope").await?.is_none());
        let kind = SessionFilter {
            kind: Some("exec".into()),
            ..SessionFilter::default()
        };
        assert_eq!(
            s.sessions(&kind, &PageRequest::default())
                .await?
                .items
                .len(),
            1
        );
        Ok(())
    }
}
