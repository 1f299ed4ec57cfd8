//! Verified tokens by SHA-256 digest, kept until the token's own `exp`.

use super::Identity;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// SHA-256 of a token: the only form in which a token is kept.
pub type TokenDigest = [u8; 32];

/// Digest of `token`.
pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// A bounded map from token digest to the identity it proved.
pub struct TokenCache {
    max: usize,
    entries: Mutex<HashMap<TokenDigest, Arc<Identity>>>,
}

impl TokenCache {
    /// A cache holding at most `max` tokens (0 disables caching).
    pub fn new(max: usize) -> Self {
        Self {
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The identity for `digest` if it is cached and its token has not expired at `now`.
    pub fn get(&self, digest: &TokenDigest, now: u64) -> Option<Arc<Identity>> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(digest)
            .filter(|identity| identity.expires_at > now)
            .cloned()
    }

    /// Remembers a verified token. When full, expired entries go first, then everything
    /// (a full cache only costs re-verification, never a wrong answer).
    pub fn insert(&self, digest: TokenDigest, identity: Arc<Identity>, now: u64) {
        if self.max == 0 || identity.expires_at <= now {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.max {
            entries.retain(|_, id| id.expires_at > now);
            if entries.len() >= self.max {
                entries.clear();
            }
        }
        entries.insert(digest, identity);
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// `true` when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(expires_at: u64) -> Arc<Identity> {
        Arc::new(Identity {
            username: "alice".into(),
            groups: vec![],
            expires_at,
            auth_method: crate::audit::AuthMethod::Oidc,
        })
    }

    #[test]
    fn entries_expire_with_their_token() {
        let cache = TokenCache::new(10);
        let d = digest("t");
        cache.insert(d, id(100), 50);
        assert!(cache.get(&d, 99).is_some());
        assert!(cache.get(&d, 100).is_none());
    }

    #[test]
    fn full_cache_evicts_expired_first() {
        let cache = TokenCache::new(2);
        cache.insert(digest("a"), id(60), 50);
        cache.insert(digest("b"), id(200), 50);
        cache.insert(digest("c"), id(200), 100);
        assert!(cache.get(&digest("b"), 100).is_some());
        assert!(cache.get(&digest("c"), 100).is_some());
        assert_eq!(cache.len(), 2);
    }
}
