//! An in-memory [`AuditStore`] for tests of the ingest path (can be switched "down").

use super::{AuditStore, InsertOutcome, StoreError};
use futures_util::future::BoxFuture;
use gatehouse_common::audit::AuditEvent;
use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Events kept in a `Vec`, deduplicated by `event_id`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    events: Mutex<(HashSet<String>, Vec<AuditEvent>)>,
    down: AtomicBool,
}

impl MemoryStore {
    /// An empty, available store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every call fail (`true`) or succeed again (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// A copy of the stored events, in insertion order.
    pub fn events(&self) -> Vec<AuditEvent> {
        match self.events.lock() {
            Ok(guard) => guard.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("memory store switched down".into()))
        } else {
            Ok(())
        }
    }
}

impl AuditStore for MemoryStore {
    fn insert<'a>(
        &'a self,
        events: &'a [AuditEvent],
    ) -> BoxFuture<'a, Result<InsertOutcome, StoreError>> {
        Box::pin(async move {
            self.check()?;
            let mut guard = match self.events.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            let (seen, stored) = &mut *guard;
            let mut outcome = InsertOutcome::default();
            for e in events {
                if seen.insert(e.event_id().to_string()) {
                    stored.push(e.clone());
                    outcome.inserted += 1;
                } else {
                    outcome.duplicates += 1;
                }
            }
            Ok(outcome)
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.check() })
    }
}
