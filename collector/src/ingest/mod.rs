//! The collector's ingest endpoint: a TLS (ALPN `h2`) listener serving
//! `POST /v1/ingest` to authenticated agents (wire format in `gatehouse_common::ingest`),
//! and `GET /v1/policy` (the active policy, long-polled; see [`crate::policy`]).
//!
//! # Layout
//! - [`tls`]: the listener's rustls config and the agent name of a client certificate.
//! - [`stream`]: one ingest stream: frames in, store commits, acks out, in order.
//! - [`token_review`]: agent service-account tokens checked with a TokenReview.
//!
//! Each connection is served by hyper's HTTP/2 server. An agent is authenticated by its
//! verified client certificate (CN = node name, for every request on that connection) or,
//! without one, by a bearer service-account token the API server confirms. Requests with
//! neither get a `401` Status and nothing is stored.

pub mod stream;
pub mod tls;
pub mod token_review;

use crate::metrics::IngestMetrics;
use crate::store::AuditStore;
use crate::tls_listener::{self, ListenerLimits};
use bytes::Bytes;
use gatehouse_common::ingest::{FRAMES_CONTENT_TYPE, INGEST_PATH};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The response body of every ingest answer (a stream of ack frames, or a Status).
pub type IngestBody = BoxBody<Bytes, std::convert::Infallible>;

/// Limits of the ingest endpoint.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Batches of one stream read ahead of the store (then the body is not read further,
    /// so HTTP/2 flow control pushes back on the agent).
    pub max_in_flight: usize,
    /// Concurrent streams one connection may open.
    pub max_streams_per_connection: u32,
    /// Bound on the TLS handshake.
    pub handshake_timeout: Duration,
    /// How long open streams may finish after shutdown is requested.
    pub drain_timeout: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 4,
            max_streams_per_connection: 8,
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// What the ingest handlers share.
pub struct IngestState {
    /// Where batches are committed.
    pub store: Arc<dyn AuditStore>,
    /// Counters and the commit latency histogram.
    pub metrics: IngestMetrics,
    /// Limits.
    pub config: IngestConfig,
    /// Checks bearer tokens of agents without a client certificate (`None`: certificates
    /// only).
    pub token_reviewer: Option<token_review::TokenReviewer>,
    // --- policy ---
    /// The policy served to agents on `GET /v1/policy` (`None`: not served).
    pub policy: Option<Arc<crate::policy::PolicyStore>>,
}

/// Serves ingest on `listener` with `tls` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<IngestState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tracing::info!(listen = ?listener.local_addr().ok(), "ingest listening (TLS, h2)");
    let limits = ListenerLimits {
        handshake_timeout: state.config.handshake_timeout,
        drain_timeout: state.config.drain_timeout,
    };
    tls_listener::serve("ingest", listener, tls, limits, shutdown, move |tls, peer, watcher| {
        let state = state.clone();
        async move {
            // rustls verified the chain; a certificate whose CN is empty names no agent.
            let agent: Option<Arc<str>> = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(tls::agent_name)
                .map(Arc::from);
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder.max_concurrent_streams(state.config.max_streams_per_connection);
            let service = service_fn(move |req| {
                let state = state.clone();
                let agent = agent.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&state, agent, req).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(err) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %err, "ingest connection ended with an error");
            }
        }
    })
    .await
}

/// Routes one request of an agent connection (`cert_agent` = its certificate's CN, if any).
pub async fn handle(
    state: &Arc<IngestState>,
    cert_agent: Option<Arc<str>>,
    req: Request<Incoming>,
) -> Response<IngestBody> {
    // --- policy ---
    // Agents follow the policy on the listener they already authenticate to.
    if crate::policy::is_policy_path(req.uri().path()) {
        return serve_policy(state, cert_agent, &req).await;
    }
    if req.uri().path() != INGEST_PATH {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the ingest listener serves POST /v1/ingest only",
        );
    }
    if req.method() != Method::POST {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "use POST for /v1/ingest",
        );
    }
    let agent = match authenticate(state, cert_agent, &req).await {
        Ok(agent) => agent,
        Err(resp) => return *resp,
    };
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type != FRAMES_CONTENT_TYPE {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "the ingest body must be application/x-gatehouse-frames",
        );
    }
    state.metrics.streams.inc();
    stream::start(state.clone(), agent, req.into_body())
}

/// `GET /v1/policy` for an authenticated agent.
async fn serve_policy<B>(
    state: &IngestState,
    cert_agent: Option<Arc<str>>,
    req: &Request<B>,
) -> Response<IngestBody> {
    let Some(policy) = &state.policy else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "this collector serves no policy (start it with --policy FILE)",
        );
    };
    if req.method() != Method::GET {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "use GET for /v1/policy",
        );
    }
    if let Err(resp) = authenticate(state, cert_agent, req).await {
        return *resp;
    }
    crate::policy::boxed(policy.respond(req.uri().query()).await)
}

/// The agent name batches must carry (`Ok(None)`: a token without a node binding, any
/// name accepted), or the refusal.
async fn authenticate<B>(
    state: &IngestState,
    cert_agent: Option<Arc<str>>,
    req: &Request<B>,
) -> Result<Option<Arc<str>>, Box<Response<IngestBody>>> {
    if let Some(name) = cert_agent {
        return Ok(Some(name));
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    let refused = |code, reason, message: &str| {
        state.metrics.unauthenticated.inc();
        Err(Box::new(status(code, reason, message)))
    };
    let (Some(reviewer), Some(token)) = (&state.token_reviewer, bearer) else {
        return refused(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "agent authentication required: present a client certificate issued by the agent CA \
             or an agent service-account bearer token",
        );
    };
    match reviewer.review(token).await {
        Ok(agent) => Ok(agent.node.map(Arc::from)),
        Err(err @ token_review::ReviewError::Unavailable(_)) => {
            tracing::warn!(error = %err, "agent token could not be reviewed");
            refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the agent token could not be checked now; retry later",
            )
        }
        Err(err @ token_review::ReviewError::NotAnAgent(_)) => {
            refused(StatusCode::FORBIDDEN, "Forbidden", &err.to_string())
        }
        Err(err) => refused(StatusCode::UNAUTHORIZED, "Unauthorized", &err.to_string()),
    }
}

/// A Kubernetes-style `v1.Status` answer.
pub fn status(code: StatusCode, reason: &str, message: &str) -> Response<IngestBody> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}
