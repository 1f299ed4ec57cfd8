//! Typed collector settings with defaults.

use std::net::SocketAddr;
use std::time::Duration;

/// Everything the collector needs to run.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Address the HTTP listener binds (loopback by default).
    pub listen: SocketAddr,
    /// How long in-flight requests may run after SIGINT/SIGTERM.
    pub drain_timeout: Duration,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9080)),
            drain_timeout: Duration::from_secs(10),
        }
    }
}
