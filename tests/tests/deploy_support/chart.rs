//! The Helm chart read as text: the keys of `values.yaml`, the templates, and which of their
//! lines render verbatim with the default values.

use super::{HELM_ONLY_LABELS, kind, name, repo, str_at};
use anyhow::Result;
use serde_json::Value;
use std::collections::BTreeMap;

/// Removes the labels only Helm sets, everywhere in an object.
pub fn strip_helm_labels(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for label in HELM_ONLY_LABELS {
                map.remove(*label);
            }
            map.values_mut().for_each(strip_helm_labels);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_helm_labels),
        _ => {}
    }
}

pub fn by_identity(objects: Vec<Value>) -> BTreeMap<(String, String), Value> {
    objects
        .into_iter()
        .map(|o| ((kind(&o).to_string(), name(&o).to_string()), o))
        .collect()
}

/// One key line of `values.yaml`: its dotted path, whether it holds a scalar (or `{}`/`[]`)
/// on the same line, and whether a comment line sits right above it.
#[derive(Debug)]
pub struct ValueKey {
    pub path: String,
    pub leaf: bool,
    pub documented: bool,
}

/// The keys of `values.yaml` by indentation (the file keeps to block maps and simple lists).
pub fn value_keys(text: &str) -> Vec<ValueKey> {
    let mut keys = Vec::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut previous = "";
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let is_key = !trimmed.starts_with('#')
            && !trimmed.starts_with('-')
            && trimmed.split_once(':').is_some_and(|(k, _)| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
            });
        if is_key {
            let (key, rest) = trimmed.split_once(':').unwrap_or_default();
            while stack.last().is_some_and(|(i, _)| *i >= indent) {
                stack.pop();
            }
            let mut path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
            path.push(key);
            keys.push(ValueKey {
                path: path.join("."),
                leaf: !rest.trim().is_empty(),
                documented: previous.trim_start().starts_with('#'),
            });
            stack.push((indent, key.to_string()));
        }
        if !trimmed.is_empty() {
            previous = line;
        }
    }
    keys
}

/// Whether the templates use `.Values.<path>` as a whole (not only a child of it).
pub fn used_whole(templates: &str, path: &str) -> bool {
    let needle = format!(".Values.{path}");
    templates.match_indices(&needle).any(|(at, _)| {
        let next = templates[at + needle.len()..].chars().next().unwrap_or(' ');
        !(next.is_ascii_alphanumeric() || next == '_' || next == '.')
    })
}

/// Every template file's text, by file name.
pub fn templates() -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for entry in std::fs::read_dir(repo().join("deploy/helm/gatehouse/templates"))? {
        let path = entry?.path();
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        map.insert(file, std::fs::read_to_string(&path)?);
    }
    Ok(map)
}

/// What a template condition evaluates to with the default values, when this test can tell.
pub fn condition(expr: &str, values: &Value) -> Option<bool> {
    let expr = expr.trim();
    if expr == "include \"gatehouse.inClusterClickHouse\" ." {
        let enabled = values.pointer("/clickhouse/enabled") == Some(&Value::Bool(true));
        let external = str_at(values, "/externalClickHouse/url");
        return Some(enabled && external.is_empty());
    }
    let path = expr.strip_prefix(".Values.")?;
    if !path.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
        return None;
    }
    let v = values.pointer(&format!("/{}", path.replace('.', "/")))?;
    Some(match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
    })
}

/// The lines of a template that render verbatim with the default values: outside template
/// actions, in branches this test can evaluate and that are taken.
pub fn verbatim_lines(template: &str, values: &Value) -> Vec<String> {
    let mut frames: Vec<Option<bool>> = Vec::new();
    let mut lines = Vec::new();
    for line in template.lines() {
        let t = line.trim();
        let action = t
            .strip_prefix("{{-")
            .or_else(|| t.strip_prefix("{{"))
            .map(|a| a.trim_end_matches("}}").trim_end_matches('-').trim());
        match action {
            Some(a) if a.starts_with("if ") => frames.push(condition(&a[3..], values)),
            Some(a) if a.starts_with("with ") => frames.push(condition(&a[5..], values)),
            Some(a) if a.starts_with("range ") => frames.push(None),
            Some("else") => {
                if let Some(top) = frames.last_mut() {
                    *top = top.map(|b| !b);
                }
            }
            Some(a) if a.starts_with("else") => {
                if let Some(top) = frames.last_mut() {
                    *top = None;
                }
            }
            Some("end") => {
                frames.pop();
            }
            _ => {
                let active = frames.iter().all(|f| *f == Some(true));
                if active && !t.is_empty() && t != "---" && !line.contains("{{") {
                    lines.push(line.to_string());
                }
            }
        }
    }
    lines
}
