//! Auditing of the request path: the per-request context the phases fill in
//! ([`RequestContext`]), the event built from it ([`event`]), the body wrappers that count
//! bytes and emit it once at the end ([`body`], [`request_body`]), and the sinks it goes to
//! ([`sink`], [`jsonl`]). Upgraded sessions end with their own event, joined on
//! `session_id`.

pub mod body;
pub mod event;
pub mod jsonl;
pub mod request_body;
pub mod sink;

use crate::authenticate::Identity;
use crate::classify::RequestInfo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// What one request was, who made it and how it ended.
#[derive(Debug)]
pub struct RequestContext {
    /// Unique id of this request (also in upgraded-session log lines).
    pub request_id: String,
    /// When the request arrived.
    pub started: Instant,
    /// Client address.
    pub peer: SocketAddr,
    /// HTTP method.
    pub method: http::Method,
    /// Path and query as sent (the query is logged too: it holds exec commands).
    pub path: String,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Set by the authenticate phase.
    pub identity: Option<Arc<Identity>>,
    /// Set by the classify phase.
    pub info: Option<RequestInfo>,
    /// Why the agent answered itself, if it did.
    pub error: Option<String>,
    // --- audit events ---
    /// Wall-clock arrival time, for the event.
    pub time: chrono::DateTime<chrono::Utc>,
    /// Path without the query.
    pub uri_path: String,
    /// Raw query string (empty when none).
    pub query: String,
    /// The built-in check that refused the request (`authentication`, ...), if one did.
    pub denied_by: Option<&'static str>,
    /// Session id of an exec/attach/portforward request.
    pub session_id: Option<String>,
    // --- masking ---
    /// Masking profile the matching policy rule names (`None`: `--default-mask-profile`).
    pub mask_profile: Option<String>,
    // --- policy ---
    /// The policy's decision and the deciding rule, once the authorize phase ran.
    pub decision: Option<(gatehouse_common::audit::Decision, String)>,
    /// The policy's options and version (masking reads `mask` from here).
    pub policy: Option<gatehouse_common::audit::PolicyOutcome>,
}

impl RequestContext {
    /// Starts the context of `req` from `peer`.
    pub fn new<B>(req: &http::Request<B>, peer: SocketAddr) -> Self {
        Self {
            request_id: uuid::Uuid::new_v4().to_string(),
            started: Instant::now(),
            peer,
            method: req.method().clone(),
            path: req
                .uri()
                .path_and_query()
                .map(|pq| pq.as_str().to_string())
                .unwrap_or_default(),
            user_agent: req
                .headers()
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            identity: None,
            info: None,
            error: None,
            time: chrono::Utc::now(),
            uri_path: req.uri().path().to_string(),
            query: req.uri().query().unwrap_or_default().to_string(),
            denied_by: None,
            session_id: None,
            mask_profile: None,
            decision: None,
            policy: None,
        }
    }
}
