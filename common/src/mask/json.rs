//! Masking decoded API objects by the `kind` in the body, whatever URL produced them:
//! single objects, `*List` (typed lists' items carry no kind: it is the list's minus
//! `List`), watch events, `meta.k8s.io` `Table` (row objects, and cells of columns a kind
//! rule names), and the `last-applied-configuration` annotation of any object.

use super::profile::Profile;
use super::{MARKER, MARKER_BASE64};
use serde_json::Value;

/// The annotation `kubectl apply` stores a JSON copy of the object in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Masks `doc` in place per `profile`; returns whether anything was changed.
pub fn mask_document(profile: &Profile, doc: &mut Value) -> bool {
    mask_object(profile, doc, None)
}

fn mask_object(profile: &Profile, value: &mut Value, kind_hint: Option<&str>) -> bool {
    let Some(obj) = value.as_object() else {
        return false;
    };
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .or(kind_hint)
        .map(str::to_string);
    let is_list = obj.get("items").is_some_and(Value::is_array);
    let is_event = obj.get("type").is_some_and(Value::is_string) && obj.contains_key("object");
    let mut changed = false;
    match kind.as_deref() {
        Some("Table") => changed |= mask_table(profile, value),
        Some(k) if k.ends_with("List") && is_list => {
            // `List` (kubectl's) has items of their own kinds; `SecretList` has Secrets.
            let item_kind = k.strip_suffix("List").filter(|s| !s.is_empty());
            if let Some(Value::Array(items)) = value.get_mut("items") {
                for item in items {
                    changed |= mask_object(profile, item, item_kind);
                }
            }
        }
        // A watch event: `{"type": "ADDED", "object": {...}}` (`WatchEvent` when typed).
        None | Some("WatchEvent") if is_event => {
            if let Some(inner) = value.get_mut("object") {
                changed |= mask_object(profile, inner, None);
            }
        }
        _ => {
            if let Some(kind) = &kind {
                for rule in profile.rules_for(kind) {
                    for p in &rule.paths {
                        p.path.for_each_mut(value, &mut |v| {
                            changed |= mask_value(v, p.base64);
                        });
                    }
                }
            }
            if profile.last_applied_configuration {
                changed |= mask_last_applied(profile, value);
            }
        }
    }
    changed
}

/// Replaces a selected value by the marker, keeping its shape where it has one: strings
/// become the marker, containers keep their keys/length with every scalar masked,
/// `null` stays `null` (nothing to hide). Numbers and booleans become the marker string:
/// hiding them matters more than their type.
fn mask_value(value: &mut Value, base64: bool) -> bool {
    match value {
        Value::Null => false,
        Value::Object(map) => map
            .values_mut()
            .fold(false, |c, v| mask_value(v, base64) | c),
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |c, v| mask_value(v, base64) | c),
        _ => {
            let marker = if base64 { MARKER_BASE64 } else { MARKER };
            if value.as_str() == Some(marker) {
                return false;
            }
            *value = Value::String(marker.to_string());
            true
        }
    }
}

/// The annotation is the object as applied: mask it with the same rules. A value that
/// is not a JSON object cannot be checked, so it is replaced whole (fail closed).
fn mask_last_applied(profile: &Profile, value: &mut Value) -> bool {
    let Some(annotation) = value
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
        .and_then(|a| a.get_mut(LAST_APPLIED))
    else {
        return false;
    };
    let Some(text) = annotation.as_str() else {
        return mask_value(annotation, false);
    };
    match serde_json::from_str::<Value>(text) {
        Ok(mut applied) if applied.is_object() => {
            if !mask_object(profile, &mut applied, None) {
                return false;
            }
            // Serialising a Value cannot fail; the fallback is the fail-closed one.
            let masked = serde_json::to_string(&applied).unwrap_or_else(|_| MARKER.to_string());
            *annotation = Value::String(format!("{masked}\n"));
            true
        }
        _ => mask_value(annotation, false),
    }
}

/// Table rows: the embedded object (full with `includeObject=Object`, metadata only with
/// `Metadata`) by its own kind, and the cells of columns a kind rule names. A row whose
/// kind is unknown (no object, or only metadata) gets every rule's columns: fail closed.
fn mask_table(profile: &Profile, table: &mut Value) -> bool {
    let columns: Vec<String> = table
        .get("columnDefinitions")
        .and_then(Value::as_array)
        .map(|cols| {
            cols.iter()
                .map(|c| {
                    c.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default();
    let mut changed = false;
    let Some(Value::Array(rows)) = table.get_mut("rows") else {
        return false;
    };
    for row in rows {
        let row_kind = row
            .pointer("/object/kind")
            .and_then(Value::as_str)
            .filter(|k| *k != "PartialObjectMetadata")
            .map(str::to_string);
        if let Some(object) = row.get_mut("object") {
            changed |= mask_object(profile, object, None);
        }
        let masked_columns: Vec<usize> = profile
            .kinds
            .iter()
            .filter(|r| row_kind.as_deref().is_none_or(|k| k == r.kind))
            .flat_map(|r| r.table_columns.iter())
            .filter_map(|name| columns.iter().position(|c| c == name))
            .collect();
        if let Some(Value::Array(cells)) = row.get_mut("cells") {
            for idx in masked_columns {
                if let Some(cell) = cells.get_mut(idx) {
                    changed |= mask_value(cell, false);
                }
            }
        }
    }
    changed
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use super::*;
    use crate::mask::profile::{ProfileSpec, default_spec};
    use serde_json::json;

    fn default() -> Profile {
        Profile::builtin_default().unwrap()
    }

    fn secret() -> Value {
        json!({"kind": "Secret", "apiVersion": "v1",
               "metadata": {"name": "db", "namespace": "prod"},
               "type": "Opaque",
               "data": {"password": "czNjcjN0", "user": "YXBw"},
               "stringData": {"token": "plain"}})
    }

    #[test]
    fn secret_data_keeps_keys_and_base64_shape() {
        let mut s = secret();
        assert!(mask_document(&default(), &mut s));
        assert_eq!(
            s["data"],
            json!({"password": MARKER_BASE64, "user": MARKER_BASE64})
        );
        assert_eq!(s["stringData"]["token"], MARKER);
        assert_eq!(s["metadata"]["name"], "db");
        // Masking is idempotent.
        assert!(!mask_document(&default(), &mut s));
    }

    #[test]
    fn typed_lists_generic_lists_and_watch_events() {
        let mut item = secret();
        item.as_object_mut().unwrap().remove("kind");
        let mut list = json!({"kind": "SecretList", "items": [item]});
        mask_document(&default(), &mut list);
        assert_eq!(list["items"][0]["data"]["password"], MARKER_BASE64);

        let mut list = json!({"kind": "List", "items": [secret()]});
        mask_document(&default(), &mut list);
        assert_eq!(list["items"][0]["data"]["password"], MARKER_BASE64);

        let mut event = json!({"type": "MODIFIED", "object": secret()});
        mask_document(&default(), &mut event);
        assert_eq!(event["object"]["data"]["user"], MARKER_BASE64);
    }

    #[test]
    fn table_rows_objects_and_named_columns() {
        let mut spec = default_spec();
        spec.kinds[0].table_columns = vec!["Data".into()];
        let profile = Profile::compile(&spec).unwrap();
        let mut table = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "columnDefinitions": [{"name": "Name"}, {"name": "Data"}],
            "rows": [{"cells": ["db", 2], "object": secret()},
                     {"cells": ["cm", 1], "object": {"kind": "ConfigMap", "data": {}}},
                     {"cells": ["x", 3], "object": {"kind": "PartialObjectMetadata"}}]});
        mask_document(&profile, &mut table);
        assert_eq!(
            table["rows"][0]["object"]["data"]["password"],
            MARKER_BASE64
        );
        assert_eq!(table["rows"][0]["cells"], json!(["db", MARKER]));
        assert_eq!(table["rows"][1]["cells"], json!(["cm", 1]));
        assert_eq!(table["rows"][2]["cells"], json!(["x", MARKER]));
    }

    #[test]
    fn pod_env_values_by_name_pattern() {
        let mut pod = json!({"kind": "Pod", "spec": {"containers": [{"name": "app", "env": [
            {"name": "DB_PASSWORD", "value": "hunter2"},
            {"name": "LOG_LEVEL", "value": "debug"}]}]}});
        mask_document(&default(), &mut pod);
        let env = &pod["spec"]["containers"][0]["env"];
        assert_eq!(env[0]["value"], MARKER);
        assert_eq!(env[1]["value"], "debug");
    }

    #[test]
    fn last_applied_is_parsed_masked_and_reserialised() {
        let applied = serde_json::to_string(&secret()).unwrap();
        let mut s = secret();
        s["metadata"]["annotations"] = json!({LAST_APPLIED: applied});
        mask_document(&default(), &mut s);
        let text = s["metadata"]["annotations"][LAST_APPLIED].as_str().unwrap();
        assert!(
            !text.contains("czNjcjN0") && !text.contains("plain"),
            "{text}"
        );
        let back: Value = serde_json::from_str(text).unwrap();
        assert_eq!(back["data"]["password"], MARKER_BASE64);

        // Unparseable: replaced whole.
        let mut s = secret();
        s["metadata"]["annotations"] = json!({LAST_APPLIED: "{not json czNjcjN0"});
        mask_document(&default(), &mut s);
        assert_eq!(s["metadata"]["annotations"][LAST_APPLIED], MARKER);

        // Metadata-only objects (Table rows, PartialObjectMetadataList) too.
        let mut meta = json!({"kind": "PartialObjectMetadata", "metadata":
            {"annotations": {LAST_APPLIED: serde_json::to_string(&secret()).unwrap()}}});
        mask_document(&default(), &mut meta);
        assert!(!meta.to_string().contains("czNjcjN0"));
    }

    #[test]
    fn a_profile_without_rules_changes_nothing() {
        let profile = Profile::compile(&ProfileSpec {
            name: "none".into(),
            kinds: vec![],
            last_applied_configuration: false,
            text: Default::default(),
        })
        .unwrap();
        let mut s = secret();
        assert!(!mask_document(&profile, &mut s));
        assert_eq!(s, secret());
    }
}
