//! What the security team asks the audit store: filtered, newest-first pages of API
//! requests and sessions (cursor pagination, no counts), and one session with its API calls.
//!
//! Every store ([`clickhouse`](super::clickhouse), the embedded one, [`memory`](super::memory))
//! answers the same [`AuditQuery`], so the query API and `gatehouse audit search` work the
//! same whichever store the collector runs with.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use gatehouse_common::audit::{ApiRequestEvent, SessionEndEvent};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// Filters on `api_requests`; every `Some` field must match (exact match, not a pattern).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestFilter {
    /// `user` equals.
    pub user: Option<String>,
    /// `groups` contains.
    pub group: Option<String>,
    /// `verb` equals (`get`, `list`, `delete`, `create`, ...).
    pub verb: Option<String>,
    /// `resource` equals (`pods`, `secrets`, ...).
    pub resource: Option<String>,
    /// `namespace` equals.
    pub namespace: Option<String>,
    /// `name` equals.
    pub name: Option<String>,
    /// `decision` equals (`allow`, `deny`, `require_approval`, ...; the wire name).
    pub decision: Option<String>,
    /// `status_code` equals.
    pub status: Option<u16>,
    /// `session_id` equals.
    pub session_id: Option<String>,
    /// `time >= since`.
    pub since: Option<DateTime<Utc>>,
    /// `time < until`.
    pub until: Option<DateTime<Utc>>,
}

/// Filters on `sessions` (by their start time).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionFilter {
    /// `user` equals.
    pub user: Option<String>,
    /// `namespace` equals.
    pub namespace: Option<String>,
    /// `pod` equals.
    pub pod: Option<String>,
    /// `kind` equals (`exec`, `attach`, `port_forward`; the wire name).
    pub kind: Option<String>,
    /// `started >= since`.
    pub since: Option<DateTime<Utc>>,
    /// `started < until`.
    pub until: Option<DateTime<Utc>>,
}

/// Where a page starts: strictly after (older than) the item with this sort key. Items are
/// ordered newest first by `(time, event_id)`, both descending, so the key is stable even
/// when many events share one timestamp (18.16 keeps whole seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The last item's time, microseconds since the epoch (whole seconds on 18.16).
    pub time_micros: i64,
    /// The last item's `event_id`.
    pub event_id: String,
}

/// A cursor that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("invalid cursor (pass back the `next` value of a previous page unchanged)")]
pub struct BadCursor;

impl Cursor {
    /// The opaque form handed to clients (base64url of the JSON, no padding).
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// Parses what [`Cursor::encode`] produced.
    pub fn decode(text: &str) -> Result<Self, BadCursor> {
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .map_err(|_| BadCursor)?;
        serde_json::from_slice(&json).map_err(|_| BadCursor)
    }
}

/// Most items one page may hold; larger requests are clamped to it.
pub const MAX_PAGE: u32 = 1000;

/// Which page: its size and where it starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Items wanted (1..=[`MAX_PAGE`]; 0 means the default, 100).
    pub limit: u32,
    /// Start after this item; `None` is the newest.
    pub after: Option<Cursor>,
}

impl PageRequest {
    /// `limit` clamped to 1..=[`MAX_PAGE`], 0 read as 100.
    pub fn effective_limit(&self) -> u32 {
        match self.limit {
            0 => 100,
            n => n.min(MAX_PAGE),
        }
    }
}

/// One page of results, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts; `None` when this page is the last. (A store may set it
    /// on a full last page; the next page is then empty.)
    pub next: Option<Cursor>,
}

/// A session with the API calls that share its `session_id` (oldest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionDetail {
    /// The session (its `SessionEnd` event).
    pub session: SessionEndEvent,
    /// Its API calls (for exec/attach: the upgrade request).
    pub requests: Vec<ApiRequestEvent>,
}

/// Read access to stored audit events.
pub trait AuditQuery: Send + Sync + 'static {
    /// API requests matching `filter`, newest first.
    fn requests<'a>(
        &'a self,
        filter: &'a RequestFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, Result<Page<ApiRequestEvent>, StoreError>>;

    /// Sessions matching `filter`, newest (by start) first.
    fn sessions<'a>(
        &'a self,
        filter: &'a SessionFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, Result<Page<SessionEndEvent>, StoreError>>;

    /// One session by id, with its API calls; `None` when no such session is stored.
    fn session<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SessionDetail>, StoreError>>;

    /// The recording chunks of a session, by `seq` (a seq may repeat if an agent re-sent
    /// it under a new event id; empty when nothing was recorded).
    fn session_chunks<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<gatehouse_common::audit::SessionChunkEvent>, StoreError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = Cursor {
            time_micros: 1_700_000_000_000_000,
            event_id: "0190-abc".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()).ok(), Some(c));
        assert!(Cursor::decode("not base64!").is_err());
        assert!(Cursor::decode("e30").is_err()); // `{}`: fields missing
    }

    #[test]
    fn page_limit_is_clamped() {
        let page = |limit| PageRequest { limit, after: None };
        assert_eq!(page(0).effective_limit(), 100);
        assert_eq!(page(5).effective_limit(), 5);
        assert_eq!(page(1_000_000).effective_limit(), MAX_PAGE);
    }
}
