//! A short-lived secret (the EKS token) cached and renewed ahead of its expiry, with one
//! renewal in flight at a time: requests before `refresh_at` get the cached value; between
//! `refresh_at` and `expires_at` they still get it while one background task renews; only
//! when nothing usable is cached do they wait, all of them for the same renewal. No caller
//! is ever handed a value past its `expires_at`.

use futures_util::future::BoxFuture;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

/// After a failed renewal, callers within this long get the same error instead of each
/// starting another attempt (an STS outage is not hammered once per request).
pub const FAILURE_HOLD: Duration = Duration::from_secs(1);

/// A value and when it must be renewed / may no longer be used.
#[derive(Debug, Clone)]
pub struct Fresh<T> {
    /// The secret.
    pub value: T,
    /// From here on a renewal starts (the value is still handed out meanwhile).
    pub refresh_at: SystemTime,
    /// From here on the value is never handed out.
    pub expires_at: SystemTime,
    /// When it was obtained (set by the cache).
    pub fetched_at: SystemTime,
}

/// Produces a new value (an error is a human-readable reason, never the secret).
pub type Fetch<T> = Arc<dyn Fn() -> BoxFuture<'static, Result<Fresh<T>, String>> + Send + Sync>;
/// The clock (wall time: expiries come from STS as wall-clock times).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The cache (see the module docs).
pub struct RefreshingCache<T> {
    current: RwLock<Option<Fresh<T>>>,
    // Held for the whole renewal: the single flight.
    renewing: Arc<tokio::sync::Mutex<()>>,
    last_failure: Mutex<Option<(SystemTime, String)>>,
    fetch: Fetch<T>,
    clock: Clock,
}

impl<T: Clone + Send + Sync + 'static> RefreshingCache<T> {
    /// A cache renewing through `fetch`, on the system clock.
    pub fn new(fetch: Fetch<T>) -> Arc<Self> {
        Self::with_clock(fetch, Arc::new(SystemTime::now))
    }

    /// A cache on `clock` (tests move time by hand).
    pub fn with_clock(fetch: Fetch<T>, clock: Clock) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(None),
            renewing: Arc::new(tokio::sync::Mutex::new(())),
            last_failure: Mutex::new(None),
            fetch,
            clock,
        })
    }

    /// A usable value: cached, or renewed now if nothing usable is cached.
    pub async fn get(self: &Arc<Self>) -> Result<T, String> {
        let now = (self.clock)();
        if let Some(fresh) = self.snapshot() {
            if now < fresh.refresh_at {
                return Ok(fresh.value);
            }
            if now < fresh.expires_at {
                // Renew in the background; whoever gets the lock first does it.
                if let Ok(guard) = self.renewing.clone().try_lock_owned() {
                    let this = self.clone();
                    tokio::spawn(async move {
                        let _guard = guard;
                        if let Err(reason) = this.renew().await {
                            tracing::warn!(%reason, "renewing the upstream credential ahead of expiry failed; the current one stays in use");
                        }
                    });
                }
                return Ok(fresh.value);
            }
        }
        let _guard = self.renewing.lock().await;
        // Someone else may have renewed while this caller waited.
        let now = (self.clock)();
        if let Some(fresh) = self.snapshot()
            && now < fresh.expires_at
        {
            return Ok(fresh.value);
        }
        if let Some((at, reason)) = self.failure()
            && now.duration_since(at).unwrap_or_default() < FAILURE_HOLD
        {
            return Err(reason);
        }
        self.renew().await
    }

    /// Drops the cached value (the API server refused it): the next caller renews.
    pub fn invalidate(&self) {
        if let Ok(mut current) = self.current.write() {
            *current = None;
        }
    }

    /// Drops the cached value if it is `sent` and was fetched at least `min_age` ago, so a
    /// source that keeps producing refused values is not asked on every request.
    pub fn invalidate_if_older(&self, sent: &T, min_age: Duration)
    where
        T: PartialEq,
    {
        let now = (self.clock)();
        if let Ok(mut current) = self.current.write()
            && current.as_ref().is_some_and(|c| {
                &c.value == sent && now.duration_since(c.fetched_at).unwrap_or_default() >= min_age
            })
        {
            *current = None;
        }
    }

    // Called with `renewing` held.
    async fn renew(&self) -> Result<T, String> {
        match (self.fetch)().await {
            Ok(mut fresh) => {
                fresh.fetched_at = (self.clock)();
                let value = fresh.value.clone();
                if let Ok(mut current) = self.current.write() {
                    *current = Some(fresh);
                }
                if let Ok(mut failure) = self.last_failure.lock() {
                    *failure = None;
                }
                Ok(value)
            }
            Err(reason) => {
                if let Ok(mut failure) = self.last_failure.lock() {
                    *failure = Some(((self.clock)(), reason.clone()));
                }
                Err(reason)
            }
        }
    }

    fn snapshot(&self) -> Option<Fresh<T>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    fn failure(&self) -> Option<(SystemTime, String)> {
        self.last_failure.lock().ok().and_then(|f| f.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Harness {
        now: Arc<Mutex<SystemTime>>,
        fetches: Arc<AtomicU64>,
        fail: Arc<std::sync::atomic::AtomicBool>,
        cache: Arc<RefreshingCache<u64>>,
    }

    const REFRESH: Duration = Duration::from_secs(300);
    const LIFETIME: Duration = Duration::from_secs(600);

    fn harness() -> Harness {
        let now = Arc::new(Mutex::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        ));
        let fetches = Arc::new(AtomicU64::new(0));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (n, f, x) = (now.clone(), fetches.clone(), fail.clone());
        let fetch: Fetch<u64> = Arc::new(move || {
            let (n, f, x) = (n.clone(), f.clone(), x.clone());
            Box::pin(async move {
                // A slow STS: every concurrent caller arrives while this is in flight.
                tokio::time::sleep(Duration::from_millis(20)).await;
                if x.load(Ordering::SeqCst) {
                    return Err("sts down".to_string());
                }
                let generation = f.fetch_add(1, Ordering::SeqCst) + 1;
                let at = *n.lock().map_err(|e| e.to_string())?;
                Ok(Fresh {
                    value: generation,
                    refresh_at: at + REFRESH,
                    expires_at: at + LIFETIME,
                    fetched_at: at,
                })
            })
        });
        let clock_now = now.clone();
        let clock: Clock = Arc::new(move || {
            clock_now
                .lock()
                .map(|t| *t)
                .unwrap_or(SystemTime::UNIX_EPOCH)
        });
        Harness {
            now,
            fetches,
            fail,
            cache: RefreshingCache::with_clock(fetch, clock),
        }
    }

    impl Harness {
        fn advance(&self, by: Duration) {
            if let Ok(mut t) = self.now.lock() {
                *t += by;
            }
        }

        async fn burst(&self, n: usize) -> Vec<Result<u64, String>> {
            let calls = (0..n).map(|_| {
                let cache = self.cache.clone();
                tokio::spawn(async move { cache.get().await })
            });
            let mut out = Vec::new();
            for call in futures_util::future::join_all(calls).await {
                out.push(call.unwrap_or_else(|e| Err(e.to_string())));
            }
            out
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_fetch_per_refresh_window_under_concurrency() {
        let h = harness();
        // Cold: 64 callers, nothing cached, all wait for one fetch.
        let first = h.burst(64).await;
        assert!(first.iter().all(|r| r == &Ok(1)), "{first:?}");
        assert_eq!(h.fetches.load(Ordering::SeqCst), 1);
        // Inside the window: no fetch at all.
        h.advance(REFRESH - Duration::from_secs(1));
        assert!(h.burst(64).await.iter().all(|r| r == &Ok(1)));
        assert_eq!(h.fetches.load(Ordering::SeqCst), 1);
        // Past refresh_at, before expiry: callers keep the old value, one renews.
        h.advance(Duration::from_secs(2));
        let during = h.burst(64).await;
        assert!(during.iter().all(|r| r == &Ok(1)), "{during:?}");
        // Wait for the background renewal (it holds the single-flight lock).
        drop(h.cache.renewing.lock().await);
        assert_eq!(h.fetches.load(Ordering::SeqCst), 2);
        assert!(h.burst(64).await.iter().all(|r| r == &Ok(2)));
        // Three more windows, each with a burst: one fetch each.
        for window in 3..6 {
            h.advance(LIFETIME + Duration::from_secs(1));
            let burst = h.burst(32).await;
            assert!(burst.iter().all(|r| r == &Ok(window)), "{burst:?}");
            assert_eq!(h.fetches.load(Ordering::SeqCst), window);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_expired_value_is_never_handed_out() {
        let h = harness();
        assert_eq!(h.cache.get().await, Ok(1));
        h.fail.store(true, Ordering::SeqCst);
        // Stale but usable: still served while the renewal fails.
        h.advance(REFRESH + Duration::from_secs(1));
        assert_eq!(h.cache.get().await, Ok(1));
        drop(h.cache.renewing.lock().await);
        // Past expiry with the source down: an error, never the old value.
        h.advance(LIFETIME);
        let burst = h.burst(16).await;
        assert!(
            burst.iter().all(|r| r == &Err("sts down".to_string())),
            "{burst:?}"
        );
        // The source is back: after the failure hold, the next caller renews.
        h.fail.store(false, Ordering::SeqCst);
        h.advance(FAILURE_HOLD);
        assert_eq!(h.cache.get().await, Ok(2));
    }

    #[tokio::test]
    async fn invalidate_forces_a_renewal() {
        let h = harness();
        assert_eq!(h.cache.get().await, Ok(1));
        h.cache.invalidate();
        assert_eq!(h.cache.get().await, Ok(2));
        // A refusal of a value fetched just now does not renew it again at once...
        h.cache.invalidate_if_older(&2, Duration::from_secs(5));
        assert_eq!(h.cache.get().await, Ok(2));
        // ...nor does a refusal of a value no longer cached; an older one does.
        h.advance(Duration::from_secs(5));
        h.cache.invalidate_if_older(&1, Duration::from_secs(5));
        assert_eq!(h.cache.get().await, Ok(2));
        h.cache.invalidate_if_older(&2, Duration::from_secs(5));
        assert_eq!(h.cache.get().await, Ok(3));
    }
}
