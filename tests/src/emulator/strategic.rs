//! Strategic merge patch for the built-in kinds: maps merge, lists of objects merge by
//! their `patchMergeKey`, and the `$patch`, `$setElementOrder`, `$retainKeys` and
//! `$deleteFromPrimitiveList` directives that `kubectl apply` sends.

use serde_json::{Map, Value};

/// The `patchMergeKey` of a list field, judged from the field name (and for `ports`, the
/// elements: container ports merge on `containerPort`, service ports on `port`).
fn merge_key(field: &str, sample: &[&Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "ports" => {
            if sample.iter().any(|e| e.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// Lists of scalars whose patch strategy is `merge` (union).
fn merges_primitives(field: &str) -> bool {
    field == "finalizers"
}

/// Applies `patch` to `target` in place.
pub fn apply(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else { return };
    merge_map(map, patch);
}

fn directive(v: &Value) -> Option<&str> {
    v.get("$patch").and_then(Value::as_str)
}

fn merge_map(map: &mut Map<String, Value>, patch: &Map<String, Value>) {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        map.clear();
        let mut fresh = Map::new();
        let stripped: Map<String, Value> = patch
            .iter()
            .filter(|(k, _)| *k != "$patch")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        merge_map(&mut fresh, &stripped);
        *map = fresh;
        return;
    }
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        match value {
            Value::Null => {
                map.remove(key);
            }
            Value::Object(child) => {
                if directive(value) == Some("delete") {
                    map.remove(key);
                    continue;
                }
                let slot = map
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(inner) = slot {
                    merge_map(inner, child);
                }
            }
            Value::Array(items) => {
                let existing = map.remove(key);
                map.insert(key.clone(), merge_list(key, existing, items));
            }
            other => {
                map.insert(key.clone(), other.clone());
            }
        }
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/")
            && let (Some(Value::Array(list)), Some(remove)) = (map.get_mut(field), value.as_array())
        {
            list.retain(|v| !remove.contains(v));
        }
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$setElementOrder/")
            && let (Some(Value::Array(list)), Some(order)) = (map.get_mut(field), value.as_array())
        {
            reorder(field, list, order);
        }
    }
    if let Some(retain) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        map.retain(|k, _| keep.contains(&k.as_str()));
    }
}

/// A fresh value built from a patch fragment, with directives resolved.
fn materialize(value: &Value) -> Value {
    match value {
        Value::Object(child) => {
            let mut fresh = Map::new();
            merge_map(&mut fresh, child);
            Value::Object(fresh)
        }
        other => other.clone(),
    }
}

fn merge_list(field: &str, existing: Option<Value>, items: &[Value]) -> Value {
    let mut current = match existing {
        Some(Value::Array(list)) => list,
        _ => Vec::new(),
    };
    if items.iter().any(|i| directive(i) == Some("replace")) {
        return Value::Array(
            items
                .iter()
                .filter(|i| directive(i) != Some("replace"))
                .map(materialize)
                .collect(),
        );
    }
    let all_objects = !items.is_empty() && items.iter().all(Value::is_object);
    let sample: Vec<&Value> = items.iter().chain(current.iter()).collect();
    match merge_key(field, &sample) {
        Some(mk) if all_objects => {
            for item in items {
                let id = item.get(mk);
                let pos = current.iter().position(|c| id.is_some() && c.get(mk) == id);
                if directive(item) == Some("delete") {
                    if let Some(p) = pos {
                        current.remove(p);
                    }
                    continue;
                }
                match pos {
                    Some(p) => apply(&mut current[p], item),
                    None => current.push(materialize(item)),
                }
            }
            Value::Array(current)
        }
        _ if merges_primitives(field) => {
            for item in items {
                if !current.contains(item) {
                    current.push(item.clone());
                }
            }
            Value::Array(current)
        }
        _ => Value::Array(items.iter().map(materialize).collect()),
    }
}

/// Orders `list` as `$setElementOrder` says; elements not named keep their place at the end.
fn reorder(field: &str, list: &mut Vec<Value>, order: &[Value]) {
    let sample: Vec<&Value> = order.iter().collect();
    let mk = merge_key(field, &sample);
    let id_of = |v: &Value| -> Value {
        match (mk, v) {
            (Some(k), Value::Object(_)) => v.get(k).cloned().unwrap_or(Value::Null),
            _ => v.clone(),
        }
    };
    let wanted: Vec<Value> = order.iter().map(id_of).collect();
    let mut sorted = Vec::with_capacity(list.len());
    for w in &wanted {
        if let Some(p) = list.iter().position(|v| id_of(v) == *w) {
            sorted.push(list.remove(p));
        }
    }
    sorted.append(list);
    *list = sorted;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}
        ]}});
        apply(
            &mut pod,
            &json!({"spec": {
                "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                "containers": [
                    {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
                    {"name": "b", "$patch": "delete"}
                ]
            }}),
        );
        assert_eq!(
            pod,
            json!({"spec": {"containers": [
                {"name": "a", "image": "a:2", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}
            ]}})
        );
    }

    #[test]
    fn directives() {
        let mut obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x", "y"]},
            "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        apply(
            &mut obj,
            &json!({
                "metadata": {"labels": {"a": null, "c": "3"}, "$deleteFromPrimitiveList/finalizers": ["x"]},
                "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}
            }),
        );
        assert_eq!(
            obj,
            json!({"metadata": {"labels": {"b": "2", "c": "3"}, "finalizers": ["y"]},
            "spec": {"strategy": {"type": "Recreate"}}})
        );
        apply(
            &mut obj,
            &json!({"metadata": {"labels": {"$patch": "replace", "z": "9"}}}),
        );
        assert_eq!(obj["metadata"]["labels"], json!({"z": "9"}));
    }

    #[test]
    fn ports_and_atomic_lists() {
        let mut svc =
            json!({"spec": {"ports": [{"port": 80, "name": "http"}], "selector": {"app": "a"}}});
        apply(
            &mut svc,
            &json!({"spec": {"ports": [{"port": 443, "name": "https"}]}}),
        );
        assert_eq!(svc["spec"]["ports"].as_array().map(Vec::len), Some(2));
        let mut role = json!({"rules": [{"verbs": ["get"]}]});
        apply(&mut role, &json!({"rules": [{"verbs": ["list"]}]}));
        assert_eq!(role, json!({"rules": [{"verbs": ["list"]}]}));
    }
}
