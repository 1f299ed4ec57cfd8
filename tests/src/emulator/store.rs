//! The object store: objects by (resource, namespace, name), a global resourceVersion
//! counter, and a bounded event history that watches replay from.

use super::resources::ResourceDef;
use super::status::ApiError;
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// How many past events a watch can resume from; older resourceVersions get 410 Expired.
const HISTORY: usize = 2048;

/// Identifies a stored object. Ordered like etcd keys (resource, namespace, name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    /// `group/plural`.
    pub resource: String,
    /// Namespace (empty for cluster scope).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjKey {
    /// The key of `name` in `namespace` of `def`.
    pub fn new(def: &ResourceDef, namespace: &str, name: &str) -> Self {
        Self {
            resource: resource_id(def),
            namespace: if def.namespaced {
                namespace.to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
        }
    }
}

/// `group/plural`, the resource part of a key.
pub fn resource_id(def: &ResourceDef) -> String {
    format!("{}/{}", def.group, def.plural)
}

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// `ADDED`, `MODIFIED`, `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change.
#[derive(Debug, Clone)]
pub struct Event {
    /// Which object.
    pub key: ObjKey,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (for deletes: its last state with a new resourceVersion).
    pub object: Value,
    /// The object before the change, for selector transitions.
    pub old: Option<Value>,
    /// resourceVersion of the change.
    pub rv: u64,
}

#[derive(Debug, Default)]
struct Inner {
    rv: u64,
    history_limit: usize,
    objects: BTreeMap<ObjKey, Value>,
    history: VecDeque<Arc<Event>>,
}

/// The store. Every write bumps the global resourceVersion.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

/// A watch start: the events to replay, then the live feed.
pub struct Subscription {
    /// Events after the requested resourceVersion, oldest first.
    pub backlog: Vec<Arc<Event>>,
    /// Objects present now (for watches that start with synthetic ADDED events).
    pub current: Vec<Value>,
    /// resourceVersion as of the subscription.
    pub rv: u64,
    /// Live events.
    pub rx: broadcast::Receiver<Arc<Event>>,
}

impl Store {
    /// An empty store (resourceVersion starts at 1).
    pub fn new() -> Self {
        Self::with_history(HISTORY)
    }

    /// An empty store keeping `limit` past events for watches to resume from.
    pub fn with_history(limit: usize) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self {
            inner: Mutex::new(Inner {
                rv: 1,
                history_limit: limit.max(1),
                ..Default::default()
            }),
            tx,
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, ApiError> {
        self.inner
            .lock()
            .map_err(|_| ApiError::internal("store lock poisoned"))
    }

    /// Current resourceVersion.
    pub fn rv(&self) -> u64 {
        self.lock().map(|i| i.rv).unwrap_or_default()
    }

    /// One object.
    pub fn get(&self, key: &ObjKey) -> Option<Value> {
        self.lock().ok()?.objects.get(key).cloned()
    }

    /// Objects of `resource` (in `namespace`, or all if `None`), with the current rv.
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let Ok(inner) = self.lock() else {
            return (Vec::new(), 0);
        };
        let items = inner
            .objects
            .iter()
            .filter(|(k, _)| k.resource == resource && namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rv)
    }

    /// Applies `change` to the object at `key` atomically. `change` gets the current
    /// object (if any) and returns the new one, `None` to delete, or an error.
    pub fn write(
        &self,
        key: &ObjKey,
        change: impl FnOnce(Option<&Value>) -> Result<Option<Value>, ApiError>,
    ) -> Result<Option<Value>, ApiError> {
        let mut inner = self.lock()?;
        let old = inner.objects.get(key).cloned();
        let new = change(old.as_ref())?;
        if old.is_none() && new.is_none() {
            return Ok(None);
        }
        inner.rv += 1;
        let rv = inner.rv;
        let (kind, mut object) = match (&old, new) {
            (None, Some(obj)) => (EventType::Added, obj),
            (Some(_), Some(obj)) => (EventType::Modified, obj),
            (Some(prev), None) => (EventType::Deleted, prev.clone()),
            (None, None) => return Ok(None),
        };
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        if kind == EventType::Deleted {
            inner.objects.remove(key);
        } else {
            inner.objects.insert(key.clone(), object.clone());
        }
        let event = Arc::new(Event {
            key: key.clone(),
            kind,
            object: object.clone(),
            old,
            rv,
        });
        inner.history.push_back(event.clone());
        while inner.history.len() > inner.history_limit {
            inner.history.pop_front();
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(event);
        Ok(Some(object))
    }

    /// Starts a watch after resourceVersion `from` (`None` = now, with current objects).
    /// Errors with 410 Expired when `from` is older than the kept history.
    pub fn subscribe(&self, resource: &str, from: Option<u64>) -> Result<Subscription, ApiError> {
        let inner = self.lock()?;
        let rx = self.tx.subscribe();
        let mut sub = Subscription {
            backlog: Vec::new(),
            current: Vec::new(),
            rv: inner.rv,
            rx,
        };
        match from {
            None => {
                sub.current = inner
                    .objects
                    .iter()
                    .filter(|(k, _)| k.resource == resource)
                    .map(|(_, v)| v.clone())
                    .collect();
            }
            Some(from) => {
                let oldest = inner.history.front().map(|e| e.rv).unwrap_or(inner.rv + 1);
                if from + 1 < oldest && from < inner.rv {
                    return Err(ApiError::new(
                        410,
                        "Expired",
                        format!("too old resource version: {from} ({})", oldest - 1),
                    ));
                }
                sub.backlog = inner
                    .history
                    .iter()
                    .filter(|e| e.rv > from && e.key.resource == resource)
                    .cloned()
                    .collect();
            }
        }
        Ok(sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(name: &str) -> ObjKey {
        ObjKey {
            resource: "/configmaps".into(),
            namespace: "dev".into(),
            name: name.into(),
        }
    }

    #[test]
    fn writes_bump_resource_version_and_replay() -> Result<(), ApiError> {
        let store = Store::new();
        let obj = json!({"metadata": {"name": "a"}});
        let created = store.write(&key("a"), |_| Ok(Some(obj.clone())))?;
        let rv1: u64 = created
            .as_ref()
            .and_then(|o| o.pointer("/metadata/resourceVersion"))
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or_default();
        store.write(&key("b"), |_| Ok(Some(json!({"metadata": {"name": "b"}}))))?;
        store.write(&key("a"), |_| Ok(None))?;
        let sub = store.subscribe("/configmaps", Some(rv1))?;
        let kinds: Vec<_> = sub
            .backlog
            .iter()
            .map(|e| (e.key.name.clone(), e.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("b".to_string(), EventType::Added),
                ("a".to_string(), EventType::Deleted)
            ]
        );
        assert_eq!(store.list("/configmaps", Some("dev")).0.len(), 1);
        Ok(())
    }

    #[test]
    fn too_old_resource_version_is_expired() -> Result<(), ApiError> {
        let store = Store::with_history(2);
        for name in ["a", "b", "c", "d"] {
            store.write(&key(name), |_| {
                Ok(Some(json!({"metadata": {"name": name}})))
            })?;
        }
        let err = store
            .subscribe("/configmaps", Some(1))
            .err()
            .map(|e| (e.code, e.reason));
        assert_eq!(err, Some((410, "Expired")));
        assert_eq!(store.subscribe("/configmaps", Some(3))?.backlog.len(), 2);
        Ok(())
    }
}
