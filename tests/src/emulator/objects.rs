//! Object lifecycle rules: validation (422 Invalid), metadata the server owns (uid,
//! creationTimestamp, generation), and per-kind defaults and status.

use super::pods;
use super::resources::ResourceDef;
use super::status::ApiError;
use serde_json::{Value, json};

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// Current time as the server writes timestamps.
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn is_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn is_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_label)
}

/// RBAC objects accept path-segment names (e.g. `system:masters`).
fn is_path_segment(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('%')
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

/// Generates `generateName` suffixes like the server (5 chars, no vowels).
fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Validates `obj` for `def`; `name` is what metadata.name resolved to.
fn validate(def: &ResourceDef, obj: &Value, name: &str) -> Result<(), ApiError> {
    let mut causes: Vec<(String, String)> = Vec::new();
    let rbac = def.group == "rbac.authorization.k8s.io";
    let name_ok = match def.kind {
        _ if rbac => is_path_segment(name),
        "Namespace" | "Service" => is_label(name),
        _ => is_subdomain(name),
    };
    if name.is_empty() {
        causes.push((
            "metadata.name".into(),
            "Required value: name or generateName is required".into(),
        ));
    } else if !name_ok {
        let msg = if matches!(def.kind, "Namespace" | "Service") {
            LABEL_MSG
        } else {
            SUBDOMAIN_MSG
        };
        causes.push((
            "metadata.name".into(),
            format!("Invalid value: {name:?}: {msg}"),
        ));
    }
    match def.kind {
        "Pod" => validate_containers(
            obj.pointer("/spec/containers"),
            "spec.containers",
            &mut causes,
        ),
        "Deployment" => {
            if obj.pointer("/spec/selector").is_none() {
                causes.push(("spec.selector".into(), "Required value".into()));
            }
            validate_containers(
                obj.pointer("/spec/template/spec/containers"),
                "spec.template.spec.containers",
                &mut causes,
            );
        }
        "RoleBinding" | "ClusterRoleBinding" if s(obj, "/roleRef/name").is_empty() => {
            causes.push(("roleRef.name".into(), "Required value".into()));
        }
        _ => {}
    }
    if causes.is_empty() {
        return Ok(());
    }
    let refs: Vec<(&str, &str)> = causes
        .iter()
        .map(|(f, m)| (f.as_str(), m.as_str()))
        .collect();
    Err(ApiError::invalid(def.kind, name, &refs))
}

fn validate_containers(list: Option<&Value>, field: &str, causes: &mut Vec<(String, String)>) {
    let list = list.and_then(Value::as_array).cloned().unwrap_or_default();
    if list.is_empty() {
        causes.push((field.into(), "Required value".into()));
    }
    for (i, c) in list.iter().enumerate() {
        if s(c, "/name").is_empty() {
            causes.push((format!("{field}[{i}].name"), "Required value".into()));
        }
        if s(c, "/image").is_empty() {
            causes.push((format!("{field}[{i}].image"), "Required value".into()));
        }
    }
}

/// Prepares a new object: kind/apiVersion, name, namespace, uid, timestamps, defaults,
/// status. Returns the validated object.
pub fn prepare_create(
    def: &ResourceDef,
    mut obj: Value,
    namespace: &str,
) -> Result<Value, ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request was in an unknown format",
        ));
    }
    obj["apiVersion"] = json!(def.api_version());
    obj["kind"] = json!(def.kind);
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    let mut name = s(&obj, "/metadata/name").to_string();
    let generate = s(&obj, "/metadata/generateName").to_string();
    if name.is_empty() && !generate.is_empty() {
        name = format!("{generate}{}", random_suffix());
    }
    validate(def, &obj, &name)?;
    let now = now();
    let meta = &mut obj["metadata"];
    meta["name"] = json!(name);
    if def.namespaced {
        let body_ns = meta
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !body_ns.is_empty() && body_ns != namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        meta["namespace"] = json!(namespace);
    } else if let Some(m) = meta.as_object_mut() {
        m.remove("namespace");
    }
    meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
    meta["creationTimestamp"] = json!(now);
    if let Some(m) = meta.as_object_mut() {
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
    }
    if obj.get("spec").is_some() || def.kind == "Deployment" {
        obj["metadata"]["generation"] = json!(1);
    }
    defaults(def, &mut obj, &now);
    Ok(obj)
}

fn defaults(def: &ResourceDef, obj: &mut Value, now: &str) {
    match def.kind {
        "Pod" => pods::init(obj, now),
        "Namespace" => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
            let name = s(obj, "/metadata/name").to_string();
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        }
        "Secret" if s(obj, "/type").is_empty() => obj["type"] = json!("Opaque"),
        "Service" => {
            if s(obj, "/spec/type").is_empty() {
                obj["spec"]["type"] = json!("ClusterIP");
            }
            if s(obj, "/spec/clusterIP").is_empty() {
                use rand::Rng;
                let ip = format!(
                    "10.96.{}.{}",
                    rand::rng().random_range(0..255),
                    rand::rng().random_range(1..255)
                );
                obj["spec"]["clusterIP"] = json!(ip);
                obj["spec"]["clusterIPs"] = json!([ip]);
            }
            if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                for p in ports {
                    if p.get("protocol").is_none() {
                        p["protocol"] = json!("TCP");
                    }
                    if p.get("targetPort").is_none() {
                        p["targetPort"] = p["port"].clone();
                    }
                }
            }
            obj["status"] = json!({"loadBalancer": {}});
        }
        "Deployment" => deployment_status(obj),
        _ => {}
    }
}

/// A deployment's status as if every replica were up.
pub fn deployment_status(obj: &mut Value) {
    if obj.pointer("/spec/replicas").is_none() {
        obj["spec"]["replicas"] = json!(1);
    }
    if obj.pointer("/spec/strategy/type").is_none() {
        obj["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
    }
    let replicas = obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1));
    let generation = obj
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));
    let now = now();
    let mut status = json!({
        "observedGeneration": generation,
        "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
             "message": "Deployment has minimum availability.", "lastUpdateTime": now, "lastTransitionTime": now},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "message": format!("ReplicaSet \"{}\" has successfully progressed.", s(obj, "/metadata/name")),
             "lastUpdateTime": now, "lastTransitionTime": now},
        ],
    });
    if replicas == json!(0)
        && let Some(m) = status.as_object_mut()
    {
        for k in [
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
        ] {
            m.remove(k);
        }
    }
    obj["status"] = status;
}

/// Carries server-owned fields from `old` into an updated `new`, checks the name and
/// bumps generation on spec changes.
pub fn prepare_update(
    def: &ResourceDef,
    old: &Value,
    mut new: Value,
    status_only: bool,
) -> Result<Value, ApiError> {
    if !new.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request was in an unknown format",
        ));
    }
    let name = s(old, "/metadata/name").to_string();
    let new_name = s(&new, "/metadata/name");
    if !new_name.is_empty() && new_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({new_name}) does not match the name on the URL ({name})"
        )));
    }
    if status_only {
        let mut merged = old.clone();
        merged["status"] = new.get("status").cloned().unwrap_or(Value::Null);
        return Ok(merged);
    }
    new["apiVersion"] = json!(def.api_version());
    new["kind"] = json!(def.kind);
    if !new.get("metadata").is_some_and(Value::is_object) {
        new["metadata"] = json!({});
    }
    for key in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
    ] {
        match old.pointer(&format!("/metadata/{key}")) {
            Some(v) => new["metadata"][key] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(key);
                }
            }
        }
    }
    validate(def, &new, &name)?;
    // Status is not writable through the main resource.
    match old.get("status") {
        Some(st) => new["status"] = st.clone(),
        None => {
            if let Some(m) = new.as_object_mut() {
                m.remove("status");
            }
        }
    }
    if new.get("spec") != old.get("spec") {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        new["metadata"]["generation"] = json!(generation);
    }
    if def.kind == "Deployment" {
        deployment_status(&mut new);
    }
    if def.kind == "Namespace" {
        new["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::super::resources::find;
    use super::*;

    #[test]
    fn names_and_required_fields() -> anyhow::Result<()> {
        let pods = find("", "v1", "pods").ok_or_else(|| anyhow::anyhow!("pods"))?;
        let err = prepare_create(pods, json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}), "dev")
            .err()
            .ok_or_else(|| anyhow::anyhow!("accepted"))?;
        assert_eq!(err.code, 422);
        assert!(err.message.starts_with(
            "Pod \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""
        ));
        let err = prepare_create(
            pods,
            json!({"metadata": {"name": "ok"}, "spec": {"containers": [{"name": "c"}]}}),
            "dev",
        )
        .err()
        .ok_or_else(|| anyhow::anyhow!("accepted"))?;
        assert!(
            err.message
                .contains("spec.containers[0].image: Required value")
        );
        let pod = prepare_create(
            pods,
            json!({"metadata": {"generateName": "web-"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
            "dev",
        )?;
        assert_eq!(pod["metadata"]["name"].as_str().map(str::len), Some(9));
        assert_eq!(pod["spec"]["nodeName"], json!("emulator-node"));
        Ok(())
    }
}
