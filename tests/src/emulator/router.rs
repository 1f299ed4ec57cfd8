//! The request pipeline: authenticate, impersonate, classify, authorize, dispatch, log.
//! Errors become `Status` responses here and only here.

use super::authn::UserInfo;
use super::context::Shared;
use super::handlers::{self, Call, text_response};
use super::impersonation;
use super::pods;
use super::rbac::{self, Attributes};
use super::request_info::{self, RequestInfo};
use super::request_log::RequestRecord;
use super::resources;
use super::status::{ApiError, json_response};
use super::store::ObjKey;
use super::streams::{self, PodStream};
use super::{Body, discovery, full_body, openapi, reviews, watch};
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::Arc;

/// Largest request body accepted (kubectl apply of big manifests stays far below).
const MAX_BODY: usize = 8 << 20;

/// Paths anonymous callers may read (`system:public-info-viewer`).
fn public(path: &str) -> bool {
    matches!(path, "/version" | "/healthz" | "/livez" | "/readyz")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

fn header_str(req: &Request<Incoming>, name: header::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Serves one request and records it.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let mut record = RequestRecord {
        user: String::new(),
        impersonated_user: None,
        impersonated_groups: Vec::new(),
        verb: String::new(),
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().unwrap_or_default().to_string(),
        code: 0,
    };
    let accepts_gzip = header_str(&req, header::ACCEPT_ENCODING)
        .split(',')
        .any(|e| e.split(';').next().unwrap_or("").trim() == "gzip");
    let resp = match route(&shared, req, &mut record).await {
        Ok(resp) => resp,
        Err(err) => err.into_response(),
    };
    let min = shared
        .gzip_min_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    let resp = if accepts_gzip {
        gzip(resp, min).await
    } else {
        resp
    };
    record.code = resp.status().as_u16();
    tracing::debug!(method = %record.method, path = %record.path, query = %record.query, user = %record.user, code = record.code, "request");
    shared.log.push(record);
    resp
}

/// Gzips a complete (not streaming) body of at least `min` bytes.
async fn gzip(resp: Response<Body>, min: usize) -> Response<Body> {
    use hyper::body::Body as _;
    use std::io::Write;
    let exact = resp.body().size_hint().exact();
    if exact.is_none_or(|n| (n as usize) < min)
        || resp.headers().contains_key(header::CONTENT_ENCODING)
    {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(collected) = body.collect().await else {
        return ApiError::internal("reading the response to compress").into_response();
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    if gz.write_all(&collected.to_bytes()).is_err() {
        return ApiError::internal("compressing").into_response();
    }
    let Ok(compressed) = gz.finish() else {
        return ApiError::internal("compressing").into_response();
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_ENCODING,
        header::HeaderValue::from_static("gzip"),
    );
    Response::from_parts(parts, full_body(compressed))
}

fn not_found() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
    .with_details(serde_json::json!({}))
}

async fn route(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    record: &mut RequestRecord,
) -> Result<Response<Body>, ApiError> {
    let query: Vec<(String, String)> = form_urlencoded::parse(record.query.as_bytes())
        .into_owned()
        .collect();
    let method = req.method().as_str().to_string();
    let info = request_info::parse(&method, &record.path, &query);
    record.verb = info.verb.clone();
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // As kube-apiserver's union authenticator: a verified client certificate first.
    let cert_user = req
        .extensions()
        .get::<super::authn::ClientCertUser>()
        .map(|c| c.0.clone());
    let mut caller = cert_user.or_else(|| shared.tokens.authenticate(authorization));
    // --- EKS token authentication ---
    if caller.is_none()
        && let Some(token) = authorization
            .and_then(|a| a.trim().strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| t.starts_with(super::eks::TOKEN_PREFIX))
    {
        let eks = shared.eks.read().ok().and_then(|e| e.clone());
        if let Some(eks) = eks {
            caller = eks.authenticate(token).await.ok();
        }
    }
    let caller = match caller {
        Some(user) => user,
        None if authorization.is_none() && public(&record.path) => {
            UserInfo::new("system:anonymous", &["system:unauthenticated"])
        }
        None => return Err(ApiError::unauthorized()),
    };
    record.user = caller.username.clone();
    let imp = impersonation::apply(&shared.store, &caller, req.headers())?;
    if imp.active {
        record.impersonated_user = Some(imp.user.username.clone());
        record.impersonated_groups = imp.groups.clone();
    }
    let user = imp.user;
    let attrs = attributes(&info);
    if !(public(&record.path) || rbac::authorize(&shared.store, &user, &attrs)) {
        return Err(rbac::forbidden(&user, &attrs));
    }
    if !info.is_resource_request || info.resource.is_empty() {
        return non_resource(shared, &req, &info);
    }
    let def = resources::find(&info.api_group, &info.api_version, &info.resource)
        .ok_or_else(not_found)?;
    let path_name = info.parts.get(1).cloned().unwrap_or_default();
    let cluster_scoped_in_ns =
        !def.namespaced && def.kind != "Namespace" && !info.namespace.is_empty();
    let namespaced_without_ns = def.namespaced
        && info.namespace.is_empty()
        && def.stored
        && !matches!(info.verb.as_str(), "list" | "watch");
    if cluster_scoped_in_ns || namespaced_without_ns {
        return Err(not_found());
    }
    if !info.subresource.is_empty() && def.subresource(&info.subresource).is_none() {
        return Err(not_found());
    }
    let namespace = if def.kind == "Namespace" {
        String::new()
    } else {
        info.namespace.clone()
    };
    if let Some(stream) = pod_stream(def.kind, &info.subresource) {
        let key = ObjKey::new(def, &namespace, &path_name);
        let pod = shared
            .store
            .get(&key)
            .ok_or_else(|| ApiError::not_found("", "pods", &path_name))?;
        return Ok(streams::serve(
            shared.runtime.clone(),
            pods::runtime_spec(&pod),
            stream,
            req,
        )
        .await);
    }
    let accept = header_str(&req, header::ACCEPT);
    let content_type = header_str(&req, header::CONTENT_TYPE);
    let body = read_body(req).await?;
    if !def.stored {
        if info.verb != "create" {
            return Err(ApiError::method_not_allowed());
        }
        return reviews::create(shared, def, &user, &namespace, &content_type, &body);
    }
    let call = Call {
        def,
        namespace,
        name: path_name,
        subresource: info.subresource.clone(),
        verb: info.verb.clone(),
        query,
        accept,
        content_type,
        body,
    };
    match call.verb.as_str() {
        "watch" => watch::serve(shared, &call),
        "list" if !call.name.is_empty() => Err(ApiError::method_not_allowed()),
        // A list with a name from a field selector is still a list.
        _ => handlers::dispatch(shared, call).await,
    }
}

fn pod_stream(kind: &str, subresource: &str) -> Option<PodStream> {
    if kind != "Pod" {
        return None;
    }
    Some(match subresource {
        "exec" => PodStream::Exec,
        "attach" => PodStream::Attach,
        "portforward" => PodStream::PortForward,
        "log" => PodStream::Log,
        _ => return None,
    })
}

async fn read_body(req: Request<Incoming>) -> Result<bytes::Bytes, ApiError> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ApiError::bad_request(format!("reading request body: {e}")))
}

fn attributes(info: &RequestInfo) -> Attributes {
    Attributes {
        verb: info.verb.clone(),
        resource_request: info.is_resource_request,
        namespace: info.namespace.clone(),
        api_group: info.api_group.clone(),
        resource: info.resource.clone(),
        subresource: info.subresource.clone(),
        name: info.name.clone(),
        path: info.path.clone(),
    }
}

fn non_resource(
    shared: &Shared,
    req: &Request<Incoming>,
    info: &RequestInfo,
) -> Result<Response<Body>, ApiError> {
    let path = info.path.trim_end_matches('/');
    let accept = header_str(req, header::ACCEPT);
    let aggregated = |body: serde_json::Value| {
        let mut resp = json_response(StatusCode::OK, &body);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE),
        );
        resp
    };
    match path {
        "/version" => Ok(json_response(StatusCode::OK, &discovery::version())),
        "/healthz" | "/livez" | "/readyz" => Ok(text_response(StatusCode::OK, "ok")),
        p if p.starts_with("/healthz/")
            || p.starts_with("/livez/")
            || p.starts_with("/readyz/") =>
        {
            Ok(text_response(StatusCode::OK, "ok"))
        }
        "/api" if discovery::wants_aggregated(&accept) => {
            Ok(aggregated(discovery::aggregated(true)))
        }
        "/api" => Ok(json_response(
            StatusCode::OK,
            &discovery::core_versions(&shared.server_address),
        )),
        "/apis" if discovery::wants_aggregated(&accept) => {
            Ok(aggregated(discovery::aggregated(false)))
        }
        "/apis" => Ok(json_response(StatusCode::OK, &discovery::group_list())),
        "/api/v1" => discovery::resource_list("")
            .map(|b| json_response(StatusCode::OK, &b))
            .ok_or_else(not_found),
        "/openapi/v2" => {
            if accept.contains("protobuf") {
                let mut resp = Response::new(full_body(openapi::v2_protobuf()));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(openapi::PROTOBUF_CONTENT_TYPE),
                );
                Ok(resp)
            } else {
                Ok(json_response(StatusCode::OK, &openapi::v2_json()))
            }
        }
        p => {
            let parts: Vec<&str> = p.trim_start_matches('/').split('/').collect();
            match parts.as_slice() {
                ["apis", group] => discovery::group(group)
                    .map(|b| json_response(StatusCode::OK, &b))
                    .ok_or_else(not_found),
                ["apis", group, "v1"] => discovery::resource_list(group)
                    .map(|b| json_response(StatusCode::OK, &b))
                    .ok_or_else(not_found),
                _ => Err(not_found()),
            }
        }
    }
}
