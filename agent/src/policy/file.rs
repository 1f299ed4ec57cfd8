//! `--policy-file`: loaded at start (a bad file stops the agent), then re-read whenever
//! its modification time or size changes; a bad edit is refused and the old policy stays.

use super::{ActivePolicy, PolicySourceError};
use gatehouse_common::policy::Policy;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A watched policy file.
pub struct FileSource {
    path: PathBuf,
    active: Arc<ActivePolicy>,
    seen: Option<(SystemTime, u64)>,
}

impl FileSource {
    /// Loads `path` into `active`.
    pub fn open(path: &Path, active: Arc<ActivePolicy>) -> Result<Self, PolicySourceError> {
        let err = |reason: String| PolicySourceError::File {
            path: path.display().to_string(),
            reason,
        };
        let seen = stamp(path);
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let policy = Policy::parse(&text).map_err(|e| err(e.to_string()))?;
        active.set(policy);
        Ok(Self {
            path: path.to_path_buf(),
            active,
            seen,
        })
    }

    /// Checks the file every `every`, forever.
    pub async fn run(mut self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.check();
        }
    }

    /// Re-reads the file if it changed.
    pub fn check(&mut self) {
        let now = stamp(&self.path);
        if now.is_none() || now == self.seen {
            return;
        }
        self.seen = now;
        let source = self.path.display().to_string();
        match std::fs::read_to_string(&self.path) {
            Ok(text) => match Policy::parse(&text) {
                Ok(policy) => {
                    self.active.set(policy);
                }
                Err(err) => self.active.reject(&source, &err),
            },
            Err(err) => self.active.reject(&source, &err),
        }
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}
