//! The collector's active policy: loaded from `--policy FILE` (a bad file stops the
//! start), re-read on SIGHUP and when the file's modification time or size changes, and
//! served to agents as `GET /v1/policy` on the ingest listener with a long-poll.
//!
//! A changed file that does not validate is refused whole: the old policy stays active,
//! the error (with its line number) is logged and
//! `gatehouse_collector_policy_reload_failures_total` counts it.

use bytes::Bytes;
use gatehouse_common::policy::{POLICY_PATH, Policy, VERSION_HEADER};
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Longest long-poll an agent may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Why the policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is no valid policy.
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: String,
        /// The problems, with line numbers.
        #[source]
        source: gatehouse_common::policy::PolicyError,
    },
}

/// Metrics of the policy source.
#[derive(Debug, Clone, Default)]
pub struct PolicyMetrics {
    /// Successful loads of a new version.
    pub reloads: Counter,
    /// Refused updates (invalid or unreadable file).
    pub reload_failures: Counter,
    /// Rules in the active policy.
    pub rules: Gauge,
}

impl PolicyMetrics {
    /// Registers the families under `gatehouse_collector_policy`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let sub = registry.sub_registry_with_prefix("gatehouse_collector_policy");
        sub.register("reloads", "New policy versions loaded", m.reloads.clone());
        sub.register(
            "reload_failures",
            "Policy updates refused (the previous policy stayed active)",
            m.reload_failures.clone(),
        );
        sub.register("rules", "Rules in the active policy", m.rules.clone());
        m
    }
}

/// The active policy and the file it comes from.
pub struct PolicyStore {
    path: PathBuf,
    current: watch::Sender<Arc<Policy>>,
    seen: Mutex<Option<(SystemTime, u64)>>,
    metrics: PolicyMetrics,
}

impl PolicyStore {
    /// Loads `path`; fails if it is unreadable or invalid.
    pub fn load(path: &Path, metrics: PolicyMetrics) -> Result<Arc<Self>, PolicyLoadError> {
        let seen = stamp(path);
        let policy = read(path)?;
        metrics.rules.set(policy.rules().len() as i64);
        tracing::info!(
            path = %path.display(),
            version = %policy.version,
            rules = policy.rules().len(),
            "policy loaded"
        );
        Ok(Arc::new(Self {
            path: path.to_path_buf(),
            current: watch::Sender::new(Arc::new(policy)),
            seen: Mutex::new(seen),
            metrics,
        }))
    }

    /// The active policy.
    pub fn current(&self) -> Arc<Policy> {
        self.current.borrow().clone()
    }

    /// Re-reads the file (SIGHUP, or a change seen by [`PolicyStore::watch`]). Returns
    /// whether a new version became active.
    pub fn reload(&self) -> Result<bool, PolicyLoadError> {
        match read(&self.path) {
            Ok(policy) => {
                if policy.version == self.current().version {
                    return Ok(false);
                }
                tracing::info!(
                    path = %self.path.display(),
                    version = %policy.version,
                    rules = policy.rules().len(),
                    "policy reloaded"
                );
                self.metrics.reloads.inc();
                self.metrics.rules.set(policy.rules().len() as i64);
                self.current.send_replace(Arc::new(policy));
                Ok(true)
            }
            Err(err) => {
                self.metrics.reload_failures.inc();
                tracing::error!(
                    error = %err,
                    active = %self.current().version,
                    "policy update refused; the previous policy stays active"
                );
                Err(err)
            }
        }
    }

    /// Follows the file: reloads on SIGHUP and when its mtime or size changes (checked
    /// every `every`), until the task is dropped.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(err) => {
                tracing::warn!(error = %err, "no SIGHUP handler; policy file changes are still polled");
                None
            }
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let by_signal = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            let now = stamp(&self.path);
            let changed = {
                let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                let changed = now.is_some() && now != *seen;
                if changed || by_signal {
                    *seen = now;
                }
                changed
            };
            if changed || by_signal {
                let _ = self.reload();
            }
        }
    }

    /// Answers `GET /v1/policy?after=<version>&wait=<secs>` for an authenticated agent:
    /// the policy at once if `after` is not current, else when it changes, else `304`
    /// after `wait`.
    pub async fn respond(&self, query: Option<&str>) -> Response<Full<Bytes>> {
        let mut after = String::new();
        let mut wait = Duration::ZERO;
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match k.as_ref() {
                "after" => after = v.into_owned(),
                "wait" => wait = Duration::from_secs(v.parse().unwrap_or(0)).min(MAX_WAIT),
                _ => {}
            }
        }
        let mut rx = self.current.subscribe();
        let current = rx.borrow_and_update().clone();
        if after.is_empty() || current.version != after {
            return policy_response(&current);
        }
        let changed = tokio::time::timeout(wait, rx.changed()).await;
        match changed {
            Ok(Ok(())) => {
                let policy = rx.borrow_and_update().clone();
                policy_response(&policy)
            }
            _ => {
                let mut resp = Response::new(Full::new(Bytes::new()));
                *resp.status_mut() = StatusCode::NOT_MODIFIED;
                set_version(&mut resp, &current.version);
                resp
            }
        }
    }
}

/// Why a policy could not be replaced through the API.
#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    /// The new text is no valid policy (nothing changed).
    #[error("{0}")]
    Invalid(#[from] gatehouse_common::policy::PolicyError),
    /// The file could not be written (e.g. a read-only ConfigMap mount; nothing changed).
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl PolicyStore {
    /// Validates `text` (without applying it).
    pub fn validate(text: &str) -> Result<Policy, ReplaceError> {
        Ok(Policy::parse(text)?)
    }

    /// Makes `policy` active and writes it to the policy file (temp file + rename), so the
    /// file stays the source of truth and a restart keeps the change.
    pub fn replace(&self, policy: Policy) -> Result<Arc<Policy>, ReplaceError> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let write_err = |source| ReplaceError::Write {
            path: self.path.display().to_string(),
            source,
        };
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, policy.source.as_bytes()).map_err(write_err)?;
        std::fs::rename(&tmp, &self.path).map_err(write_err)?;
        *seen = stamp(&self.path);
        let policy = Arc::new(policy);
        if policy.version != self.current().version {
            self.metrics.reloads.inc();
            self.metrics.rules.set(policy.rules().len() as i64);
            self.current.send_replace(policy.clone());
        }
        Ok(policy)
    }
}

/// Whether `path` is the policy endpoint.
pub fn is_policy_path(path: &str) -> bool {
    path == POLICY_PATH
}

/// Boxes a policy response into the ingest body type.
pub fn boxed(resp: Response<Full<Bytes>>) -> Response<crate::ingest::IngestBody> {
    resp.map(|b| b.boxed())
}

fn policy_response(policy: &Policy) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(policy.source.clone())));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/yaml"),
    );
    set_version(&mut resp, &policy.version);
    resp
}

fn set_version<B>(resp: &mut Response<B>, version: &str) {
    if let Ok(v) = HeaderValue::from_str(version) {
        resp.headers_mut().insert(VERSION_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        resp.headers_mut().insert(header::ETAG, v);
    }
}

fn read(path: &Path) -> Result<Policy, PolicyLoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyLoadError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Policy::parse(&text).map_err(|source| PolicyLoadError::Invalid {
        path: path.display().to_string(),
        source,
    })
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "apiVersion: gatehouse.dev/v1\nkind: Policy\nrules:\n  - name: a\n    subjects: {users: [x]}\n    action: allow\n";

    #[tokio::test]
    async fn long_poll_returns_on_change_and_refuses_bad_updates()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, A)?;
        let store = PolicyStore::load(&path, PolicyMetrics::default())?;
        let v1 = store.current().version.clone();
        // Unknown version: answered at once.
        let resp = store.respond(Some("after=&wait=5")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[VERSION_HEADER], v1.as_str());
        // Current version, nothing changes: 304 after the wait.
        let resp = store.respond(Some(&format!("after={v1}&wait=0"))).await;
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
        // A bad file is refused and the old version stays.
        std::fs::write(
            &path,
            "apiVersion: gatehouse.dev/v1\nkind: Policy\nrules:\n  - name: b\n    action: allow\n",
        )?;
        let err = store
            .reload()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("line 5") && err.contains("subjects"), "{err}");
        assert_eq!(store.current().version, v1);
        assert_eq!(store.metrics.reload_failures.get(), 1);
        // A waiting poll sees the next good version.
        let waiting = {
            let store = store.clone();
            let v1 = v1.clone();
            tokio::spawn(async move { store.respond(Some(&format!("after={v1}&wait=30"))).await })
        };
        tokio::task::yield_now().await;
        std::fs::write(&path, A.replace("name: a", "name: c"))?;
        assert!(store.reload()?);
        let resp = waiting.await?;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_ne!(resp.headers()[VERSION_HEADER], v1.as_str());
        Ok(())
    }

    #[test]
    fn a_bad_file_refuses_the_start() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("policy.yaml");
        std::fs::write(
            &path,
            "apiVersion: gatehouse.dev/v1\nkind: Policy\nrules:\n  - nme: x\n",
        )?;
        let err = PolicyStore::load(&path, PolicyMetrics::default()).err();
        assert!(err.is_some_and(|e| e.to_string().contains("line 4")));
        Ok(())
    }
}
