//! The real server's printer columns and cells for each kind (`pkg/printers/internalversion`).

use super::human_duration;
use crate::emulator::selectors::LabelSelector;
use serde_json::{Value, json};

/// Age of an RFC 3339 timestamp at `metadata.creationTimestamp`.
fn age(obj: &Value) -> String {
    let ts = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str);
    match ts.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) {
        Some(t) => {
            human_duration((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
        }
        None => "<unknown>".into(),
    }
}

fn s<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn i(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or_default()
}

fn or_none(v: &str) -> Value {
    json!(if v.is_empty() { "<none>" } else { v })
}

fn count(obj: &Value, pointer: &str) -> i64 {
    match obj.pointer(pointer) {
        Some(Value::Object(m)) => m.len() as i64,
        Some(Value::Array(a)) => a.len() as i64,
        _ => 0,
    }
}

/// `(name, type, priority)` columns for a kind.
pub(super) fn columns(kind: &str) -> Vec<(&'static str, &'static str, u8)> {
    let c = |n, t| (n, t, 0u8);
    let w = |n, t| (n, t, 1u8);
    match kind {
        "Pod" => vec![
            c("Name", "string"),
            c("Ready", "string"),
            c("Status", "string"),
            c("Restarts", "string"),
            c("Age", "string"),
            w("IP", "string"),
            w("Node", "string"),
            w("Nominated Node", "string"),
            w("Readiness Gates", "string"),
        ],
        "Namespace" => vec![
            c("Name", "string"),
            c("Status", "string"),
            c("Age", "string"),
        ],
        "Secret" => vec![
            c("Name", "string"),
            c("Type", "string"),
            c("Data", "string"),
            c("Age", "string"),
        ],
        "ConfigMap" => vec![c("Name", "string"), c("Data", "string"), c("Age", "string")],
        "Service" => vec![
            c("Name", "string"),
            c("Type", "string"),
            c("Cluster-IP", "string"),
            c("External-IP", "string"),
            c("Port(s)", "string"),
            c("Age", "string"),
            w("Selector", "string"),
        ],
        "ServiceAccount" => vec![
            c("Name", "string"),
            c("Secrets", "string"),
            c("Age", "string"),
        ],
        "Endpoints" => vec![
            c("Name", "string"),
            c("Endpoints", "string"),
            c("Age", "string"),
        ],
        "Node" => vec![
            c("Name", "string"),
            c("Status", "string"),
            c("Roles", "string"),
            c("Age", "string"),
            c("Version", "string"),
            w("Internal-IP", "string"),
            w("External-IP", "string"),
            w("OS-Image", "string"),
            w("Kernel-Version", "string"),
            w("Container-Runtime", "string"),
        ],
        "Deployment" => vec![
            c("Name", "string"),
            c("Ready", "string"),
            c("Up-to-date", "string"),
            c("Available", "string"),
            c("Age", "string"),
            w("Containers", "string"),
            w("Images", "string"),
            w("Selector", "string"),
        ],
        "Role" | "ClusterRole" => vec![c("Name", "string"), c("Created At", "date")],
        "RoleBinding" | "ClusterRoleBinding" => vec![
            c("Name", "string"),
            c("Role", "string"),
            c("Age", "string"),
            w("Users", "string"),
            w("Groups", "string"),
            w("ServiceAccounts", "string"),
        ],
        "Event" => vec![
            c("Last Seen", "string"),
            c("Type", "string"),
            c("Reason", "string"),
            c("Object", "string"),
            c("Message", "string"),
        ],
        _ => vec![c("Name", "string"), c("Age", "string")],
    }
}

fn subjects(obj: &Value, kind: &str) -> String {
    let list = obj.get("subjects").and_then(Value::as_array);
    let names: Vec<String> = list
        .into_iter()
        .flatten()
        .filter(|sub| sub.get("kind").and_then(Value::as_str) == Some(kind))
        .map(|sub| {
            let name = s(sub, "/name");
            if kind == "ServiceAccount" {
                format!("{}/{name}", s(sub, "/namespace"))
            } else {
                name.to_string()
            }
        })
        .collect();
    names.join(", ")
}

fn pod_cells(obj: &Value) -> Vec<Value> {
    let statuses = obj
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array);
    let total = count(obj, "/spec/containers");
    let ready = statuses
        .into_iter()
        .flatten()
        .filter(|c| c["ready"] == json!(true))
        .count();
    let restarts: i64 = statuses
        .into_iter()
        .flatten()
        .map(|c| i(c, "/restartCount"))
        .sum();
    let mut reason = s(obj, "/status/phase").to_string();
    for c in statuses.into_iter().flatten() {
        if let Some(r) = c.pointer("/state/waiting/reason").and_then(Value::as_str) {
            reason = r.to_string();
        } else if let Some(t) = c.pointer("/state/terminated") {
            reason = match t.get("reason").and_then(Value::as_str) {
                Some(r) => r.to_string(),
                None if i(t, "/exitCode") == 0 => "Completed".into(),
                None => "Error".into(),
            };
        }
    }
    if obj.pointer("/metadata/deletionTimestamp").is_some() {
        reason = "Terminating".into();
    }
    vec![
        json!(s(obj, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts.to_string()),
        json!(age(obj)),
        or_none(s(obj, "/status/podIP")),
        or_none(s(obj, "/spec/nodeName")),
        or_none(s(obj, "/status/nominatedNodeName")),
        json!("<none>"),
    ]
}

fn service_ports(obj: &Value) -> String {
    let ports: Vec<String> = obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(np) => format!("{}:{np}/{proto}", i(p, "/port")),
                None => format!("{}/{proto}", i(p, "/port")),
            }
        })
        .collect();
    ports.join(",")
}

fn containers_field(obj: &Value, field: &str) -> String {
    let v: Vec<&str> = obj
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| s(c, field))
        .collect();
    v.join(",")
}

/// One row's cells.
pub(super) fn cells(kind: &str, obj: &Value) -> Vec<Value> {
    let name = json!(s(obj, "/metadata/name"));
    match kind {
        "Pod" => pod_cells(obj),
        "Namespace" => vec![name, json!(s(obj, "/status/phase")), json!(age(obj))],
        "Secret" => vec![
            name,
            json!(s(obj, "/type")),
            json!(count(obj, "/data")),
            json!(age(obj)),
        ],
        "ConfigMap" => vec![
            name,
            json!(count(obj, "/data") + count(obj, "/binaryData")),
            json!(age(obj)),
        ],
        "Service" => {
            let selector = obj.pointer("/spec/selector").and_then(Value::as_object);
            let sel: Vec<String> = selector
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            vec![
                name,
                json!(s(obj, "/spec/type")),
                or_none(s(obj, "/spec/clusterIP")),
                json!("<none>"),
                or_none(&service_ports(obj)),
                json!(age(obj)),
                or_none(&sel.join(",")),
            ]
        }
        "ServiceAccount" => vec![name, json!(count(obj, "/secrets")), json!(age(obj))],
        "Endpoints" => vec![name, json!("<none>"), json!(age(obj))],
        "Node" => vec![
            name,
            json!("Ready"),
            json!("<none>"),
            json!(age(obj)),
            json!(s(obj, "/status/nodeInfo/kubeletVersion")),
            json!("127.0.0.1"),
            json!("<none>"),
            json!(s(obj, "/status/nodeInfo/osImage")),
            json!(s(obj, "/status/nodeInfo/kernelVersion")),
            json!(s(obj, "/status/nodeInfo/containerRuntimeVersion")),
        ],
        "Deployment" => {
            let selector = obj
                .pointer("/spec/selector")
                .map(LabelSelector::from_json)
                .unwrap_or_default();
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    i(obj, "/status/readyReplicas"),
                    i(obj, "/spec/replicas")
                )),
                json!(i(obj, "/status/updatedReplicas")),
                json!(i(obj, "/status/availableReplicas")),
                json!(age(obj)),
                json!(containers_field(obj, "/name")),
                json!(containers_field(obj, "/image")),
                json!(selector.to_display()),
            ]
        }
        "Role" | "ClusterRole" => vec![name, json!(s(obj, "/metadata/creationTimestamp"))],
        "RoleBinding" | "ClusterRoleBinding" => vec![
            name,
            json!(format!(
                "{}/{}",
                s(obj, "/roleRef/kind"),
                s(obj, "/roleRef/name")
            )),
            json!(age(obj)),
            json!(subjects(obj, "User")),
            json!(subjects(obj, "Group")),
            json!(subjects(obj, "ServiceAccount")),
        ],
        "Event" => vec![
            json!(age(obj)),
            json!(s(obj, "/type")),
            json!(s(obj, "/reason")),
            json!(format!(
                "{}/{}",
                s(obj, "/involvedObject/kind").to_lowercase(),
                s(obj, "/involvedObject/name")
            )),
            json!(s(obj, "/message")),
        ],
        _ => vec![name, json!(age(obj))],
    }
}
