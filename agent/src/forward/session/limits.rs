//! Idle timeout and maximum length of upgraded sessions: the clock the relay watches, and
//! the message kubectl prints when the agent ends a session for either.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Limits on one session; `None` = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionLimits {
    /// End the session after this long without a byte in either direction.
    pub idle: Option<Duration>,
    /// End the session this long after it started.
    pub max: Option<Duration>,
}

/// Why a limit ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// No bytes for `idle`.
    Idle(Duration),
    /// Open for `max`.
    Max(Duration),
}

impl Limit {
    /// The session's `end_reason`.
    pub(crate) fn end_reason(self) -> &'static str {
        match self {
            Self::Idle(_) => "idle_timeout",
            Self::Max(_) => "max_duration",
        }
    }

    /// What kubectl prints (after `error: `).
    pub(crate) fn message(self) -> String {
        match self {
            Self::Idle(d) => format!(
                "session idle timeout: the Gatehouse agent ended this session after {} \
                 without input or output",
                humanize(d)
            ),
            Self::Max(d) => format!(
                "session time limit: the Gatehouse agent ended this session after its \
                 maximum length of {}",
                humanize(d)
            ),
        }
    }
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// When the session started and when it last moved a byte.
#[derive(Debug)]
pub(crate) struct Activity {
    started: Instant,
    /// Milliseconds after `started` of the last byte.
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Bytes moved now.
    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves when a limit is reached (never without limits).
    pub(crate) async fn expired(&self, limits: SessionLimits) -> Limit {
        loop {
            match self.due(limits, Instant::now()) {
                Some(Ok(limit)) => return limit,
                Some(Err(at)) => tokio::time::sleep_until(at).await,
                None => return std::future::pending().await,
            }
        }
    }

    /// At `now`: `Ok` if a limit is reached, else `Err` with when to look again; `None`
    /// without limits.
    fn due(&self, limits: SessionLimits, now: Instant) -> Option<Result<Limit, Instant>> {
        let last = self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        let mut next: Option<Instant> = None;
        if let Some(max) = limits.max {
            if now >= self.started + max {
                return Some(Ok(Limit::Max(max)));
            }
            next = Some(self.started + max);
        }
        if let Some(idle) = limits.idle {
            if now >= last + idle {
                return Some(Ok(Limit::Idle(idle)));
            }
            next = Some(next.map_or(last + idle, |n| n.min(last + idle)));
        }
        next.map(Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_moves_with_activity_and_max_is_fixed() {
        let a = Activity::new();
        let t0 = a.started;
        let s = Duration::from_secs;
        let limits = SessionLimits {
            idle: Some(s(10)),
            max: Some(s(25)),
        };
        assert_eq!(a.due(limits, t0 + s(1)), Some(Err(t0 + s(10))));
        assert_eq!(a.due(limits, t0 + s(10)), Some(Ok(Limit::Idle(s(10)))));
        a.last_ms.store(18_000, Ordering::Relaxed);
        assert_eq!(a.due(limits, t0 + s(20)), Some(Err(t0 + s(25))));
        assert_eq!(a.due(limits, t0 + s(25)), Some(Ok(Limit::Max(s(25)))));
        assert_eq!(a.due(SessionLimits::default(), t0 + s(99)), None);
        let idle = Limit::Idle(s(5));
        assert!(idle.message().contains("after 5s"), "{}", idle.message());
        assert_eq!(idle.end_reason(), "idle_timeout");
        assert!(Limit::Max(s(7200)).message().contains("2h"));
    }
}
