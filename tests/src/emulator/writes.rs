//! Writes to stored resources: create, update, patch, delete (cascading for
//! namespaces), deletecollection, and the deployments' scale subresource.

use super::Body;
use super::context::Shared;
use super::handlers::{Call, object_response, select};
use super::objects;
use super::patch;
use super::pods;
use super::resources::{RESOURCES, ResourceDef};
use super::selectors::LabelSelector;
use super::status::{ApiError, json_response, success_status};
use super::store::{ObjKey, resource_id};
use super::strategic;
use http::{Response, StatusCode};
use serde_json::{Value, json};

fn not_found(call: &Call) -> ApiError {
    ApiError::not_found(call.def.group, call.def.plural, &call.name)
}

fn parse_body(call: &Call) -> Result<Value, ApiError> {
    if call
        .content_type
        .starts_with("application/vnd.kubernetes.protobuf")
    {
        return super::protobuf::decode(&call.body)
            .map_err(|e| ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml ({e})")));
    }
    serde_json::from_slice(&call.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))
}

fn require_namespace(shared: &Shared, call: &Call) -> Result<(), ApiError> {
    if !call.def.namespaced {
        return Ok(());
    }
    let Some(ns_def) = RESOURCES.iter().find(|r| r.kind == "Namespace") else {
        return Ok(());
    };
    match shared.store.get(&ObjKey::new(ns_def, "", &call.namespace)) {
        None => Err(ApiError::not_found("", "namespaces", &call.namespace)),
        Some(ns) if ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") => {
            Err(ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
                call.def.plural, call.name, call.namespace
            )))
        }
        Some(_) => Ok(()),
    }
}

/// Handles the verb for one call.
pub async fn create(shared: &Shared, call: &Call) -> Result<Response<Body>, ApiError> {
    let body = parse_body(call)?;
    let obj = objects::prepare_create(call.def, body, &call.namespace)?;
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let call_named = Call {
        name: name.clone(),
        body: bytes::Bytes::new(),
        query: call.query.clone(),
        accept: call.accept.clone(),
        content_type: String::new(),
        namespace: call.namespace.clone(),
        subresource: String::new(),
        verb: call.verb.clone(),
        def: call.def,
    };
    require_namespace(shared, &call_named)?;
    if call.dry_run() {
        if shared.store.get(&call_named.key()).is_some() {
            return Err(ApiError::already_exists(
                call.def.group,
                call.def.plural,
                &name,
            ));
        }
        return Ok(object_response(shared, call, StatusCode::CREATED, obj));
    }
    let def = call.def;
    let stored = shared
        .store
        .write(&call_named.key(), |old| match old {
            Some(_) => Err(ApiError::already_exists(def.group, def.plural, &name)),
            None => Ok(Some(obj)),
        })?
        .ok_or_else(|| ApiError::internal("create lost the object"))?;
    if def.kind == "Pod" {
        pods::start(&shared.runtime, &stored).await;
    }
    if def.kind == "Namespace" {
        default_service_account(shared, &name)?;
    }
    Ok(object_response(shared, call, StatusCode::CREATED, stored))
}

/// The `default` ServiceAccount the real controller manager adds to every namespace.
fn default_service_account(shared: &Shared, namespace: &str) -> Result<(), ApiError> {
    let Some(sa_def) = RESOURCES.iter().find(|r| r.kind == "ServiceAccount") else {
        return Ok(());
    };
    let sa = objects::prepare_create(sa_def, json!({"metadata": {"name": "default"}}), namespace)?;
    let key = ObjKey::new(sa_def, namespace, "default");
    // Already there (a leftover) is fine; returning `None` for an existing one would delete it.
    let _ = shared.store.write(&key, |old| match old {
        Some(_) => Err(ApiError::already_exists("", "serviceaccounts", "default")),
        None => Ok(Some(sa)),
    });
    Ok(())
}

fn check_rv(call: &Call, old: &Value, new: &Value) -> Result<(), ApiError> {
    let want = new
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let have = old
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !want.is_empty() && want != have {
        return Err(ApiError::conflict(
            call.def.group,
            call.def.plural,
            &call.name,
        ));
    }
    Ok(())
}

/// Handles the verb for one call.
pub fn update(shared: &Shared, call: &Call) -> Result<Response<Body>, ApiError> {
    let body = parse_body(call)?;
    let def = call.def;
    let status_only = call.subresource == "status";
    let stored = shared.store.write(&call.key(), |old| {
        let old = old.ok_or_else(|| not_found(call))?;
        check_rv(call, old, &body)?;
        objects::prepare_update(def, old, body.clone(), status_only).map(Some)
    })?;
    let stored = stored.ok_or_else(|| not_found(call))?;
    Ok(object_response(shared, call, StatusCode::OK, stored))
}

/// Handles the verb for one call.
pub fn patch_object(shared: &Shared, call: &Call) -> Result<Response<Body>, ApiError> {
    let ct = call
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    if ct == "application/apply-patch+yaml" {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "server-side apply is not supported by this emulator",
        ));
    }
    let patch_doc: Value = serde_json::from_slice(&call.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let def = call.def;
    let status_only = call.subresource == "status";
    let stored = shared.store.write(&call.key(), |old| {
        let old = old.ok_or_else(|| not_found(call))?;
        let mut doc = old.clone();
        match ct.as_str() {
            "application/json-patch+json" => patch::json_patch(&mut doc, &patch_doc)?,
            "application/merge-patch+json" => patch::merge_patch(&mut doc, &patch_doc),
            "application/strategic-merge-patch+json" => strategic::apply(&mut doc, &patch_doc),
            other => {
                return Err(ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})")));
            }
        }
        check_rv(call, old, &doc)?;
        objects::prepare_update(def, old, doc, status_only).map(Some)
    })?;
    let stored = stored.ok_or_else(|| not_found(call))?;
    Ok(object_response(shared, call, StatusCode::OK, stored))
}

/// Deletes one object (cascading for namespaces, stopping pods' processes).
async fn delete_one(
    shared: &Shared,
    def: &'static ResourceDef,
    key: &ObjKey,
    precondition_uid: Option<&str>,
) -> Result<Value, ApiError> {
    if def.kind == "Namespace" {
        for other in RESOURCES.iter().filter(|r| r.namespaced && r.stored) {
            let (items, _) = shared.store.list(&resource_id(other), Some(&key.name));
            for item in items {
                let name = item
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                Box::pin(delete_one(
                    shared,
                    other,
                    &ObjKey::new(other, &key.name, name),
                    None,
                ))
                .await?;
            }
        }
    }
    if def.kind == "Pod" {
        // Like a graceful delete: watchers first see the pod Terminating.
        let _ = shared.store.write(key, |old| {
            Ok(old.map(|o| {
                let mut o = o.clone();
                o["metadata"]["deletionTimestamp"] = json!(objects::now());
                o["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                o
            }))
        });
    }
    let gone = shared.store.write(key, |old| {
        let old = old.ok_or_else(|| ApiError::not_found(def.group, def.plural, &key.name))?;
        let uid = old
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(want) = precondition_uid.filter(|w| *w != uid) {
            return Err(ApiError::conflict(def.group, def.plural, &key.name)
                .with_details(json!({"uid": want})));
        }
        Ok(None)
    })?;
    let gone = gone.ok_or_else(|| ApiError::not_found(def.group, def.plural, &key.name))?;
    if def.kind == "Pod" {
        let uid = gone
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        shared.runtime.stop_pod(uid).await;
    }
    Ok(gone)
}

/// Handles the verb for one call.
pub async fn delete(shared: &Shared, call: &Call) -> Result<Response<Body>, ApiError> {
    if call.def.kind == "Namespace"
        && matches!(
            call.name.as_str(),
            "default" | "kube-system" | "kube-public"
        )
    {
        return Err(ApiError::forbidden(format!(
            "namespaces \"{}\" is forbidden: this namespace may not be deleted",
            call.name
        )));
    }
    let options: Value = serde_json::from_slice(&call.body).unwrap_or(Value::Null);
    let uid = options
        .pointer("/preconditions/uid")
        .and_then(Value::as_str);
    if call.dry_run() {
        let obj = shared
            .store
            .get(&call.key())
            .ok_or_else(|| not_found(call))?;
        return Ok(object_response(shared, call, StatusCode::OK, obj));
    }
    let gone = delete_one(shared, call.def, &call.key(), uid).await?;
    if matches!(call.def.kind, "Pod" | "Namespace") {
        return Ok(object_response(shared, call, StatusCode::OK, gone));
    }
    let uid = gone
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(json_response(
        StatusCode::OK,
        &success_status(call.def.group, call.def.plural, &call.name, uid),
    ))
}

/// Handles the verb for one call.
pub async fn delete_collection(shared: &Shared, call: &Call) -> Result<Response<Body>, ApiError> {
    let (items, _) = select(shared, call)?;
    for item in &items {
        let name = item
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let ns = item
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        // Already gone is fine: someone else deleted it meanwhile.
        let _ = delete_one(shared, call.def, &ObjKey::new(call.def, ns, name), None).await;
    }
    let body = json!({"kind": format!("{}List", call.def.kind), "apiVersion": call.def.api_version(), "metadata": {"resourceVersion": shared.store.rv().to_string()}, "items": items});
    Ok(json_response(StatusCode::OK, &body))
}

fn scale_of(obj: &Value) -> Value {
    let replicas = obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1));
    let selector = obj
        .pointer("/spec/selector")
        .map(LabelSelector::from_json)
        .unwrap_or_default();
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"], "uid": obj["metadata"]["uid"],
            "resourceVersion": obj["metadata"]["resourceVersion"], "creationTimestamp": obj["metadata"]["creationTimestamp"]},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "selector": selector.to_display()},
    })
}

/// Handles the verb for one call.
pub fn scale(shared: &Shared, call: &Call) -> Result<Response<Body>, ApiError> {
    if call.verb == "get" {
        let obj = shared
            .store
            .get(&call.key())
            .ok_or_else(|| not_found(call))?;
        return Ok(json_response(StatusCode::OK, &scale_of(&obj)));
    }
    let body: Value = serde_json::from_slice(&call.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))?;
    let def = call.def;
    let stored = shared.store.write(&call.key(), |old| {
        let old = old.ok_or_else(|| not_found(call))?;
        let mut scale = scale_of(old);
        if call.verb == "patch" {
            if call.content_type.starts_with("application/json-patch+json") {
                patch::json_patch(&mut scale, &body)?;
            } else {
                patch::merge_patch(&mut scale, &body);
            }
        } else {
            scale = body.clone();
        }
        let mut new = old.clone();
        new["spec"]["replicas"] = scale.pointer("/spec/replicas").cloned().unwrap_or(json!(1));
        objects::prepare_update(def, old, new, false).map(Some)
    })?;
    let stored = stored.ok_or_else(|| not_found(call))?;
    Ok(json_response(StatusCode::OK, &scale_of(&stored)))
}
