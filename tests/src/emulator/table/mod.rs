//! `as=Table` responses: the real server's printer columns per kind, ages formatted like
//! `duration.HumanDuration`.

mod printers;

use super::resources::ResourceDef;
use printers::{cells, columns};
use serde_json::{Value, json};

/// What each row's `object` holds (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object.
    None,
    /// `PartialObjectMetadata` (the server default).
    Metadata,
    /// The full object.
    Object,
}

impl IncludeObject {
    /// From the `includeObject` query parameter.
    pub fn from_query(v: Option<&str>) -> Self {
        match v {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// `duration.HumanDuration` for a number of seconds.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn row(def: &ResourceDef, obj: &Value, include: IncludeObject) -> Value {
    let mut row = json!({"cells": cells(def.kind, obj)});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
            });
        }
        IncludeObject::Object => row["object"] = obj.clone(),
    }
    row
}

/// A Table of `objects`.
pub fn table(
    def: &ResourceDef,
    objects: &[Value],
    resource_version: &str,
    continue_token: Option<&str>,
    include: IncludeObject,
) -> Value {
    let defs: Vec<Value> = columns(def.kind)
        .into_iter()
        .map(|(name, ty, priority)| {
            json!({
                "name": name,
                "type": ty,
                "format": if name == "Name" { "name" } else { "" },
                "description": format!("{name} of the {}.", def.singular),
                "priority": priority,
            })
        })
        .collect();
    let mut metadata = json!({"resourceVersion": resource_version});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": defs,
        "rows": objects.iter().map(|o| row(def, o, include)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_like_the_server() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(190), "3m10s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 5 * 60), "3h5m");
        assert_eq!(human_duration(20 * 3600), "20h");
        assert_eq!(human_duration(2 * 86400), "2d");
        assert_eq!(human_duration(3 * 86400 + 3600 * 4), "3d4h");
        assert_eq!(human_duration(400 * 86400), "400d");
    }

    #[test]
    fn pod_row() -> anyhow::Result<()> {
        let def = super::super::resources::find("", "v1", "pods")
            .ok_or_else(|| anyhow::anyhow!("pods"))?;
        let pod = json!({"metadata": {"name": "web", "creationTimestamp": chrono::Utc::now().to_rfc3339()},
            "spec": {"containers": [{"name": "c"}], "nodeName": "emulator-node"},
            "status": {"phase": "Running", "podIP": "127.0.0.1",
                "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "state": {"running": {}}}]}});
        let t = table(def, &[pod], "5", None, IncludeObject::Metadata);
        assert_eq!(t["rows"][0]["cells"][1], json!("1/1"));
        assert_eq!(t["rows"][0]["cells"][2], json!("Running"));
        assert_eq!(
            t["rows"][0]["object"]["kind"],
            json!("PartialObjectMetadata")
        );
        assert_eq!(t["columnDefinitions"].as_array().map(Vec::len), Some(9));
        Ok(())
    }
}
