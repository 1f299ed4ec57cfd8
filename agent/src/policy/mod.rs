//! The agent's active policy: where it comes from (a local file, or the collector with a
//! long-poll), the last good version kept on disk, and fail-closed behaviour until one is
//! loaded.
//!
//! # Layout
//! - [`ActivePolicy`]: the policy requests are decided with (`None` until loaded).
//! - [`file`]: `--policy-file`, re-read when its modification time or size changes.
//! - [`fetch`]: `--policy-url`, `GET /v1/policy?after=<version>&wait=<secs>` at the collector.
//! - [`cache`]: `--policy-cache`, the last good policy, so a restart without the collector
//!   still has one.
//!
//! A new version is applied only when it parses and validates completely; otherwise the
//! old one stays active and the refusal is logged with its line number.

pub mod cache;
pub mod fetch;
pub mod file;

use gatehouse_common::policy::Policy;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Message of the 503 answered while no policy was ever loaded.
pub const NOT_LOADED_MESSAGE: &str = "gatehouse policy not loaded yet: the agent refuses every \
     request until it has a policy from the collector or --policy-file";

/// Where the policy comes from.
#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    /// `--policy-file`: a local policy file (development and tests, or a mounted ConfigMap).
    pub file: Option<PathBuf>,
    /// `--policy-url`: the collector (`https://collector:port`), with its TLS material.
    pub url: Option<crate::ship::ShipConfig>,
    /// `--policy-cache`: where the last good policy is kept.
    pub cache: Option<PathBuf>,
    /// How often `file` is checked for changes.
    pub file_poll: Duration,
    /// How long one long-poll to the collector waits for a change.
    pub long_poll: Duration,
}

impl PolicyConfig {
    /// Defaults: no source (every request refused), 1s file checks, 30s long-polls.
    pub fn new() -> Self {
        Self {
            file_poll: Duration::from_secs(1),
            long_poll: Duration::from_secs(30),
            ..Self::default()
        }
    }
}

/// Why a policy source could not start.
#[derive(Debug, thiserror::Error)]
pub enum PolicySourceError {
    /// `--policy-file` is missing, unreadable or invalid at start.
    #[error("--policy-file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong (invalid policies name the line).
        reason: String,
    },
    /// The collector URL or its TLS material is unusable.
    #[error("--policy-url: {0}")]
    Url(String),
}

/// Metrics of the active policy (`gatehouse_agent_policy_*`).
#[derive(Debug, Clone, Default)]
pub struct PolicyMetrics {
    /// 1 once a policy is loaded.
    pub loaded: Gauge,
    /// Rules in the active policy.
    pub rules: Gauge,
    /// New versions applied.
    pub updates: Counter,
    /// Updates refused (invalid or unreadable); the previous policy stayed.
    pub rejected: Counter,
}

impl PolicyMetrics {
    /// Registers the families in `registry` (already prefixed `gatehouse_agent`).
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("policy");
        sub.register(
            "loaded",
            "1 once a policy is loaded (requests are refused before)",
            self.loaded.clone(),
        );
        sub.register("rules", "Rules in the active policy", self.rules.clone());
        sub.register(
            "updates",
            "New policy versions applied",
            self.updates.clone(),
        );
        sub.register(
            "rejected_updates",
            "Policy updates refused (the previous policy stayed active)",
            self.rejected.clone(),
        );
    }
}

/// The policy requests are decided with, replaced whole when a new version validates.
#[derive(Debug, Default)]
pub struct ActivePolicy {
    current: RwLock<Option<Arc<Policy>>>,
    metrics: PolicyMetrics,
}

impl ActivePolicy {
    /// No policy yet: every request is refused with 503 until one is set.
    pub fn empty() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// [`ActivePolicy::empty`] reporting to `metrics`.
    pub fn with_metrics(metrics: PolicyMetrics) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::default(),
            metrics,
        })
    }

    /// A fixed policy (in-process tests, or a caller managing updates itself).
    pub fn fixed(policy: Policy) -> Arc<Self> {
        let active = Self::default();
        active.set(policy);
        Arc::new(active)
    }

    /// The current policy, if one was ever loaded.
    pub fn get(&self) -> Option<Arc<Policy>> {
        // A poisoned lock still holds a whole policy: writers only swap an `Arc`.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Version of the current policy.
    pub fn version(&self) -> Option<String> {
        self.get().map(|p| p.version.clone())
    }

    /// Makes `policy` current; `false` when it was the current version already.
    pub fn set(&self, policy: Policy) -> bool {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current
            .as_ref()
            .is_some_and(|p| p.version == policy.version)
        {
            return false;
        }
        tracing::info!(
            version = %policy.version,
            name = %policy.name,
            rules = policy.rules().len(),
            "policy active"
        );
        self.metrics.loaded.set(1);
        self.metrics.rules.set(policy.rules().len() as i64);
        self.metrics.updates.inc();
        *current = Some(Arc::new(policy));
        true
    }

    /// Counts and logs an update that was refused (the old policy stays).
    pub fn reject(&self, source: &str, err: &dyn std::fmt::Display) {
        self.metrics.rejected.inc();
        tracing::error!(
            source,
            error = %err,
            active = ?self.version(),
            "policy update refused; the previous policy stays active"
        );
    }

    /// Updates refused so far.
    pub fn rejected(&self) -> u64 {
        self.metrics.rejected.get()
    }

    /// `/readyz` condition: a policy is loaded.
    pub fn ready_check(self: &Arc<Self>) -> crate::ops::ReadyCheck {
        let active = self.clone();
        Box::new(move || {
            let loaded = active.get().is_some();
            Box::pin(async move {
                if loaded {
                    Ok(())
                } else {
                    Err("policy not loaded".into())
                }
            })
        })
    }
}

/// Loads what can be loaded at start (the file, else the cache) and spawns the task
/// that follows the source. A bad `--policy-file` stops the start.
pub fn start(
    config: &PolicyConfig,
    active: &Arc<ActivePolicy>,
) -> Result<Option<tokio::task::JoinHandle<()>>, PolicySourceError> {
    if let Some(path) = &config.file {
        let watcher = file::FileSource::open(path, active.clone())?;
        return Ok(Some(tokio::spawn(watcher.run(config.file_poll))));
    }
    if let Some(cache) = &config.cache {
        match cache::load(cache) {
            Ok(Some(policy)) => {
                tracing::info!(path = %cache.display(), "policy loaded from the local cache");
                active.set(policy);
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(path = %cache.display(), error = %err, "policy cache ignored")
            }
        }
    }
    match &config.url {
        Some(ship) => {
            let fetcher = fetch::Fetcher::new(ship, config.long_poll, config.cache.clone())
                .map_err(|e| PolicySourceError::Url(e.to_string()))?;
            Ok(Some(tokio::spawn(fetcher.run(active.clone()))))
        }
        None => {
            if active.get().is_none() {
                tracing::warn!(
                    "no --policy-file or --policy-url: every request is refused (503) until a policy is configured"
                );
            }
            Ok(None)
        }
    }
}
