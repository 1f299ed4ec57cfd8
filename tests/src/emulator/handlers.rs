//! Reads of stored resources (get, chunked list with selectors), response encoding
//! (object or Table), and verb dispatch to [`super::writes`].

use super::context::Shared;
use super::pods;
use super::resources::ResourceDef;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{ApiError, json_response};
use super::store::{ObjKey, resource_id};
use super::table::{self, IncludeObject};
use super::writes;
use super::{Body, full_body};
use base64::Engine;
use http::{Response, StatusCode, header};
use serde_json::{Value, json};
use std::sync::Arc;

/// One parsed resource request.
#[derive(Debug)]
pub struct Call {
    /// The resource.
    pub def: &'static ResourceDef,
    /// Namespace (empty for cluster scope).
    pub namespace: String,
    /// Name from the path (not from a field selector).
    pub name: String,
    /// Subresource.
    pub subresource: String,
    /// RequestInfo verb.
    pub verb: String,
    /// Query pairs.
    pub query: Vec<(String, String)>,
    /// `Accept`.
    pub accept: String,
    /// `Content-Type`.
    pub content_type: String,
    /// Request body.
    pub body: bytes::Bytes,
}

impl Call {
    /// A query parameter.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The stored object this call names.
    pub fn key(&self) -> ObjKey {
        ObjKey::new(self.def, &self.namespace, &self.name)
    }

    /// `dryRun=All`.
    pub fn dry_run(&self) -> bool {
        self.query.iter().any(|(k, v)| k == "dryRun" && v == "All")
    }
}

/// Whether the client asked for a Table.
pub fn table_requested(accept: &str) -> bool {
    accept
        .split(',')
        .any(|m| m.replace(' ', "").split(';').any(|p| p == "as=Table"))
}

/// Encodes one object (or a one-row Table) for the client.
pub fn object_response(
    shared: &Shared,
    call: &Call,
    code: StatusCode,
    mut obj: Value,
) -> Response<Body> {
    present(shared, call.def, &mut obj);
    if table_requested(&call.accept) {
        let rv = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let include = IncludeObject::from_query(call.param("includeObject"));
        return json_response(code, &table::table(call.def, &[obj], &rv, None, include));
    }
    json_response(code, &obj)
}

/// Fills live state (pod container states) into an object about to be served.
pub fn present(shared: &Shared, def: &ResourceDef, obj: &mut Value) {
    if def.kind == "Pod" {
        pods::present(obj, &shared.runtime);
    }
}

/// Dispatches a stored-resource request.
pub async fn dispatch(shared: &Arc<Shared>, call: Call) -> Result<Response<Body>, ApiError> {
    match (call.verb.as_str(), call.subresource.as_str()) {
        ("get", "") => get(shared, &call),
        ("list", _) => list(shared, &call),
        ("create", "") => writes::create(shared, &call).await,
        ("update", "" | "status" | "finalize") => writes::update(shared, &call),
        ("patch", "" | "status") => writes::patch_object(shared, &call),
        ("delete", "") => writes::delete(shared, &call).await,
        ("deletecollection", _) => writes::delete_collection(shared, &call).await,
        ("get", "status") => get(shared, &call),
        ("get" | "update" | "patch", "scale") if call.def.kind == "Deployment" => {
            writes::scale(shared, &call)
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn not_found(call: &Call) -> ApiError {
    ApiError::not_found(call.def.group, call.def.plural, &call.name)
}

fn get(shared: &Shared, call: &Call) -> Result<Response<Body>, ApiError> {
    let obj = shared
        .store
        .get(&call.key())
        .ok_or_else(|| not_found(call))?;
    Ok(object_response(shared, call, StatusCode::OK, obj))
}

/// Objects of a list request after namespace, label and field selection.
pub fn select(shared: &Shared, call: &Call) -> Result<(Vec<Value>, u64), ApiError> {
    let labels = LabelSelector::parse(call.param("labelSelector").unwrap_or_default())?;
    let fields = FieldSelector::parse(call.param("fieldSelector").unwrap_or_default())?;
    let ns = (call.def.namespaced && !call.namespace.is_empty()).then_some(call.namespace.as_str());
    let (items, rv) = shared.store.list(&resource_id(call.def), ns);
    let mut out = Vec::new();
    for mut obj in items {
        present(shared, call.def, &mut obj);
        if labels.matches(&obj) && fields.matches(&obj) {
            out.push(obj);
        }
    }
    Ok((out, rv))
}

fn item_key(obj: &Value) -> String {
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    format!("{ns}/{name}")
}

fn list(shared: &Shared, call: &Call) -> Result<Response<Body>, ApiError> {
    let (mut items, rv) = select(shared, call)?;
    if let Some(token) = call.param("continue").filter(|t| !t.is_empty()) {
        let start = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                ApiError::bad_request("continue key is not valid: illegal base64 data")
            })?;
        items.retain(|o| item_key(o) > start);
    }
    let limit: usize = call
        .param("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut next = None;
    if limit > 0 && items.len() > limit {
        items.truncate(limit);
        next = items
            .last()
            .map(|o| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(item_key(o)));
    }
    let rv = rv.to_string();
    if table_requested(&call.accept) {
        let include = IncludeObject::from_query(call.param("includeObject"));
        return Ok(json_response(
            StatusCode::OK,
            &table::table(call.def, &items, &rv, next.as_deref(), include),
        ));
    }
    let mut metadata = json!({"resourceVersion": rv});
    if let Some(next) = next {
        metadata["continue"] = json!(next);
    }
    let body = json!({
        "kind": format!("{}List", call.def.kind),
        "apiVersion": call.def.api_version(),
        "metadata": metadata,
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// A plain-text response (used for health endpoints).
pub fn text_response(code: StatusCode, text: &str) -> Response<Body> {
    let mut resp = Response::new(full_body(text.to_string()));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
