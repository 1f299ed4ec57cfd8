//! The per-request context the phases fill in, and the one audit line it ends as.
//!
//! This version writes the line through `tracing` (target `gatehouse::audit`); the
//! durable spool and shipping to the collector come later and will consume the same
//! context. For streams, `duration_ms` is the time until the response headers were sent;
//! upgraded sessions log their own end with the same `request_id`.

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
    // --- audit events (task A) ---
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
        }
    }

    /// Emits the audit line.
    pub fn finish(&self, code: http::StatusCode) {
        let (user, groups) = match &self.identity {
            Some(id) => (id.username.as_str(), id.groups.join(",")),
            None => ("", String::new()),
        };
        let info = self.info.clone().unwrap_or_default();
        tracing::info!(
            target: "gatehouse::audit",
            request_id = %self.request_id,
            peer = %self.peer,
            user,
            groups = %groups,
            verb = %info.verb,
            api_group = %info.api_group,
            resource = %info.resource,
            subresource = %info.subresource,
            namespace = %info.namespace,
            name = %info.name,
            method = %self.method,
            path = %self.path,
            code = code.as_u16(),
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            user_agent = %self.user_agent,
            error = self.error.as_deref().unwrap_or_default(),
            "request"
        );
    }
}
