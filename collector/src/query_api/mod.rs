//! The query API for the security team (`--api-listen`): TLS, HTTP/1.1 and h2, callers
//! authenticated by an OIDC ID token and allowed only when in one of `--query-groups`.
//!
//! - `GET /v1/audit/requests?user=&group=&verb=&...` → `{"items":[...],"next":cursor|null}`
//! - `GET /v1/sessions?user=&namespace=&pod=&kind=&...`, `GET /v1/sessions/{id}`
//! - `GET|PUT /v1/policy`: the active policy; replaced by `--policy-admin-groups` members,
//!   each attempt an audit event ([`policy_admin`]).
//! - `GET /v1/sessions/{id}/recording` → the asciicast v2 file (`application/x-asciicast`)
//! - `Accept: application/x-ndjson` or `format=ndjson` on a list: every match, one JSON
//!   object a line, paged server-side one store page at a time (bounded memory).
//!
//! Errors are `v1.Status`-like JSON. Every query is logged (who, what); tokens never are.

pub mod params;
pub mod policy_admin;
pub mod recording;

use crate::store::StoreError;
use crate::store::query::{AuditQuery, MAX_PAGE, Page, PageRequest};
use crate::tls_listener::{self, ListenerLimits};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use gatehouse_common::oidc::{AuthError, Authenticator, Identity};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use params::{Format, ParamError};
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Response body: a whole JSON document, or an NDJSON export stream.
pub type ApiBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// `tracing` target of the who-queried-what log lines.
pub const QUERY_LOG_TARGET: &str = "gatehouse::audit_query";

/// What the handlers share.
pub struct ApiState {
    /// Where the events are read from.
    pub store: Arc<dyn AuditQuery>,
    /// Verifies the callers' ID tokens.
    pub authenticator: Authenticator,
    /// Groups (as in the token, with any `--oidc-groups-prefix`) whose members may query.
    pub query_groups: Vec<String>,
    /// Time a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Time in-flight requests (and exports) may take to finish after shutdown.
    pub drain_timeout: Duration,
    // --- policy ---
    /// `GET|PUT /v1/policy` (`None`: the collector holds no policy).
    pub policy_admin: Option<policy_admin::PolicyAdmin>,
}

/// The listener's TLS settings: the collector's certificate, ALPN `h2` and `http/1.1`.
pub fn tls_config(
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, crate::ingest::tls::TlsError> {
    let base = crate::ingest::tls::server_config(cert_file, key_file, None)?;
    let mut config = (*base).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS client settings for the OIDC issuer: only `ca_file` when given, else the
/// Mozilla roots.
pub fn issuer_tls(
    ca_file: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, crate::ingest::tls::TlsError> {
    use crate::ingest::tls::TlsError;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem_err = |source| TlsError::Pem {
                what: "certificates",
                path: path.to_path_buf(),
                source,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(pem_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(pem_err)?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(TlsError::NoRoots(path.to_path_buf()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Serves the query API on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tracing::info!(listen = ?listener.local_addr().ok(), "query API listening (TLS, HTTP/1.1 + h2)");
    let limits = ListenerLimits {
        handshake_timeout: state.handshake_timeout,
        drain_timeout: state.drain_timeout,
    };
    tls_listener::serve("query API", listener, tls, limits, shutdown, move |tls, peer, watcher| {
        let state = state.clone();
        async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move {
                    // --- policy ---
                    if policy_admin::is_policy_path(req.uri().path()) {
                        return Ok::<_, std::convert::Infallible>(
                            policy_admin::handle(&state, req).await,
                        );
                    }
                    Ok::<_, std::convert::Infallible>(handle(&state, req).await)
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(err) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %err, "query API connection ended with an error");
            }
        }
    })
    .await
}

/// A `v1.Status`-like error body.
pub fn status(code: StatusCode, reason: &str, message: &str) -> Response<ApiBody> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    let mut resp = json_response(code, &body);
    if code == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

fn json_response<T: Serialize>(code: StatusCode, value: &T) -> Response<ApiBody> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    let mut resp = Response::new(
        Full::new(Bytes::from(bytes))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn store_failed(err: &StoreError) -> Response<ApiBody> {
    tracing::warn!(target: QUERY_LOG_TARGET, error = %err, "audit query failed in the store");
    status(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        &format!("the audit store did not answer: {err}"),
    )
}

fn bad_request(err: &ParamError) -> Response<ApiBody> {
    status(StatusCode::BAD_REQUEST, "BadRequest", &err.to_string())
}

/// Who is asking, or the refusal: 401 without a valid token, 403 outside `--query-groups`.
async fn authorize<B>(
    state: &ApiState,
    req: &Request<B>,
) -> Result<Arc<Identity>, Response<ApiBody>> {
    let identity = match state.authenticator.authenticate(req.headers()).await {
        Ok(id) => id,
        Err(AuthError::Keys(err)) => {
            tracing::warn!(target: QUERY_LOG_TARGET, error = %err, "cannot verify query API tokens");
            return Err(status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "cannot verify tokens right now (the identity provider's keys are unavailable)",
            ));
        }
        Err(err) => {
            tracing::info!(
                target: QUERY_LOG_TARGET,
                path = %req.uri().path(),
                reason = err.reason(),
                "audit query refused: not authenticated"
            );
            return Err(status(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                &err.to_string(),
            ));
        }
    };
    if !identity
        .groups
        .iter()
        .any(|g| state.query_groups.contains(g))
    {
        tracing::info!(
            target: QUERY_LOG_TARGET,
            user = %identity.username,
            path = %req.uri().path(),
            "audit query refused: not in a query group"
        );
        return Err(status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "user {:?} may not read the audit trail: only members of {} may (--query-groups)",
                identity.username,
                state.query_groups.join(", ")
            ),
        ));
    }
    Ok(identity)
}

fn wants_ndjson<B>(req: &Request<B>, format: Option<Format>) -> bool {
    match format {
        Some(f) => f == Format::Ndjson,
        None => req
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("application/x-ndjson")),
    }
}

/// Fetches one page starting after the given cursor.
type PageFetch<T> =
    Arc<dyn Fn(PageRequest) -> BoxFuture<'static, Result<Page<T>, StoreError>> + Send + Sync>;

/// Streams every item `fetch` yields, page after page (one page in memory at a time). A
/// store error mid-way aborts the stream, so a truncated export is never mistaken for a
/// complete one.
fn export<T: Serialize + Send + 'static>(fetch: PageFetch<T>) -> Response<ApiBody> {
    // State: `Some(after)` = fetch the page after `after`; `None` = done.
    let start: Option<Option<crate::store::query::Cursor>> = Some(None);
    let stream = futures_util::stream::unfold(start, move |state| {
        let fetch = fetch.clone();
        async move {
            let after = state?;
            let page = PageRequest {
                limit: MAX_PAGE,
                after,
            };
            match fetch(page).await {
                Ok(p) => {
                    let mut buf = Vec::new();
                    for item in &p.items {
                        if serde_json::to_writer(&mut buf, item).is_ok() {
                            buf.push(b'\n');
                        }
                    }
                    let next = p.next.map(Some);
                    Some((Ok(Frame::data(Bytes::from(buf))), next))
                }
                Err(err) => {
                    tracing::warn!(target: QUERY_LOG_TARGET, error = %err, "audit export aborted by a store error");
                    Some((Err(std::io::Error::other(err.to_string())), None))
                }
            }
        }
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    resp
}

/// JSON form of a page: `{"items":[...],"next":"<cursor>"|null}`.
#[derive(Serialize)]
struct PageJson<'a, T> {
    items: &'a [T],
    next: Option<String>,
}

fn page_json<T: Serialize>(page: &Page<T>) -> Response<ApiBody> {
    json_response(
        StatusCode::OK,
        &PageJson {
            items: &page.items,
            next: page.next.as_ref().map(|c| c.encode()),
        },
    )
}

/// Answers one request.
pub async fn handle<B>(state: &Arc<ApiState>, req: Request<B>) -> Response<ApiBody> {
    if req.method() != Method::GET {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the query API is read-only: GET only",
        );
    }
    let path = req.uri().path().to_string();
    let known =
        path == "/v1/audit/requests" || path == "/v1/sessions" || path.starts_with("/v1/sessions/");
    if !known {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "not found (the query API serves /v1/audit/requests, /v1/sessions and /v1/sessions/{id})",
        );
    }
    let identity = match authorize(state, &req).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let query = req.uri().query().unwrap_or("").to_string();
    let now = chrono::Utc::now();
    let store = state.store.clone();
    if path == "/v1/audit/requests" {
        let p = match params::request_params(Some(&query), now) {
            Ok(p) => p,
            Err(err) => return bad_request(&err),
        };
        let ndjson = wants_ndjson(&req, p.format);
        tracing::info!(target: QUERY_LOG_TARGET, user = %identity.username, endpoint = "requests", %query, ndjson, "audit query");
        if ndjson {
            let filter = Arc::new(p.filter);
            return export(Arc::new(move |page| {
                let (store, filter) = (store.clone(), filter.clone());
                Box::pin(async move { store.requests(&filter, &page).await })
            }));
        }
        return match store.requests(&p.filter, &p.page).await {
            Ok(page) => page_json(&page),
            Err(err) => store_failed(&err),
        };
    }
    if path == "/v1/sessions" {
        let p = match params::session_params(Some(&query), now) {
            Ok(p) => p,
            Err(err) => return bad_request(&err),
        };
        let ndjson = wants_ndjson(&req, p.format);
        tracing::info!(target: QUERY_LOG_TARGET, user = %identity.username, endpoint = "sessions", %query, ndjson, "audit query");
        if ndjson {
            let filter = Arc::new(p.filter);
            return export(Arc::new(move |page| {
                let (store, filter) = (store.clone(), filter.clone());
                Box::pin(async move { store.sessions(&filter, &page).await })
            }));
        }
        return match store.sessions(&p.filter, &p.page).await {
            Ok(page) => page_json(&page),
            Err(err) => store_failed(&err),
        };
    }
    let id = path.trim_start_matches("/v1/sessions/");
    if let Some(id) = id.strip_suffix("/recording")
        && !id.is_empty()
        && !id.contains('/')
    {
        tracing::info!(target: QUERY_LOG_TARGET, user = %identity.username, endpoint = "recording", session = %id, "audit query");
        return session_recording(&store, id).await;
    }
    if id.is_empty() || id.contains('/') {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "not found (use /v1/sessions/{id})",
        );
    }
    tracing::info!(target: QUERY_LOG_TARGET, user = %identity.username, endpoint = "session", session = %id, "audit query");
    match store.session(id).await {
        Ok(Some(detail)) => json_response(StatusCode::OK, &detail),
        Ok(None) => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("no session {id:?} is stored"),
        ),
        Err(err) => store_failed(&err),
    }
}

/// `GET /v1/sessions/{id}/recording`.
async fn session_recording(store: &Arc<dyn AuditQuery>, id: &str) -> Response<ApiBody> {
    let chunks = match store.session_chunks(id).await {
        Ok(c) => c,
        Err(err) => return store_failed(&err),
    };
    let session = match store.session(id).await {
        Ok(detail) => detail.map(|d| d.session),
        Err(err) => return store_failed(&err),
    };
    let Some(cast) = recording::assemble(chunks, session.as_ref()) else {
        let why = if session.is_some() {
            "was not recorded (or its recording has not arrived yet)"
        } else {
            "is not stored"
        };
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("session {id:?} {why}"),
        );
    };
    let mut resp = Response::new(
        Full::new(Bytes::from(cast))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(recording::CONTENT_TYPE),
    );
    resp
}

#[cfg(test)]
mod tests;
