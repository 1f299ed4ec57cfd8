//! JSON patch (RFC 6902) and JSON merge patch (RFC 7386).

use super::status::ApiError;
use serde_json::Value;

/// RFC 7386: objects merge recursively, `null` deletes, everything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(map) = target {
        for (k, v) in patch_map {
            if v.is_null() {
                map.remove(k);
            } else {
                merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<(String, String), ApiError> {
    let idx = path
        .rfind('/')
        .ok_or_else(|| ApiError::bad_request(format!("invalid JSON pointer {path:?}")))?;
    Ok((path[..idx].to_string(), unescape(&path[idx + 1..])))
}

fn bad(msg: String) -> ApiError {
    ApiError::new(422, "Invalid", msg)
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), ApiError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    let target = doc.pointer_mut(&parent).ok_or_else(|| {
        bad(format!(
            "add operation does not apply: doc is missing path: {path:?}"
        ))
    })?;
    match target {
        Value::Object(map) => {
            map.insert(last, value);
        }
        Value::Array(arr) => {
            let idx = if last == "-" {
                arr.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= arr.len())
                    .ok_or_else(|| {
                        bad(format!(
                            "add operation does not apply: invalid index {last:?}"
                        ))
                    })?
            };
            arr.insert(idx, value);
        }
        _ => {
            return Err(bad(format!(
                "add operation does not apply: doc is missing path: {path:?}"
            )));
        }
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, ApiError> {
    let (parent, last) = split_pointer(path)?;
    let missing = || {
        bad(format!(
            "remove operation does not apply: doc is missing path: {path:?}"
        ))
    };
    match doc.pointer_mut(&parent).ok_or_else(missing)? {
        Value::Object(map) => map.remove(&last).ok_or_else(missing),
        Value::Array(arr) => {
            let idx = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < arr.len())
                .ok_or_else(missing)?;
            Ok(arr.remove(idx))
        }
        _ => Err(missing()),
    }
}

/// Applies an RFC 6902 patch document.
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| ApiError::bad_request("json patch must be an array of operations"))?;
    for op in ops {
        let path = op.get("path").and_then(Value::as_str).unwrap_or_default();
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        match op.get("op").and_then(Value::as_str).unwrap_or_default() {
            "add" => add(doc, path, value)?,
            "remove" => {
                remove(doc, path)?;
            }
            "replace" => {
                remove(doc, path)?;
                add(doc, path, value)?;
            }
            "move" => {
                let from = op.get("from").and_then(Value::as_str).unwrap_or_default();
                let v = remove(doc, from)?;
                add(doc, path, v)?;
            }
            "copy" => {
                let from = op.get("from").and_then(Value::as_str).unwrap_or_default();
                let v = doc.pointer(from).cloned().ok_or_else(|| {
                    bad(format!(
                        "copy operation does not apply: doc is missing from path: {from:?}"
                    ))
                })?;
                add(doc, path, v)?;
            }
            "test" => {
                if doc.pointer(path) != Some(&value) {
                    return Err(bad(format!("testing value {path:?} failed: test failed")));
                }
            }
            other => return Err(ApiError::bad_request(format!("Unexpected kind: {other}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_semantics() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge_patch(&mut doc, &json!({"a": {"b": null, "d": 3}, "l": [3]}));
        assert_eq!(doc, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn json_patch_ops() -> Result<(), ApiError> {
        let mut doc = json!({"metadata": {"labels": {"a": "1"}}, "l": [1, 2]});
        json_patch(
            &mut doc,
            &json!([
                {"op": "add", "path": "/metadata/labels/b", "value": "2"},
                {"op": "replace", "path": "/metadata/labels/a", "value": "x"},
                {"op": "remove", "path": "/l/0"},
                {"op": "add", "path": "/l/-", "value": 9},
                {"op": "test", "path": "/l/1", "value": 9},
            ]),
        )?;
        assert_eq!(
            doc,
            json!({"metadata": {"labels": {"a": "x", "b": "2"}}, "l": [2, 9]})
        );
        assert!(json_patch(&mut doc, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        Ok(())
    }
}
