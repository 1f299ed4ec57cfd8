//! The shipper: sends spooled audit events to the collector over one long-lived HTTP/2
//! `POST /v1/ingest` stream (see `gatehouse_common::ingest`), several batches in flight,
//! and advances the spool's ack cursor as the collector's in-order acks arrive, so
//! segments are deleted only once their events are committed.
//!
//! On a refused batch (`committed: false`), a stream error, a stall or a disconnect, it
//! reconnects with capped exponential backoff plus jitter and resends everything unacked
//! from the cursor; the collector dedups by `event_id`, so delivery is exactly once at the
//! store.
//!
//! A batch starting at or past everything sent so far, in records this run wrote, is sent
//! as `fresh` (never sent before), so the collector skips its lookup of stored ids; a
//! batch that may repeat anything sent earlier (by this run, or by an earlier run: records
//! recovered at start-up) is not.
//!
//! - [`conn`]: TCP/TLS/HTTP/2 and the ingest stream.
//! - [`metrics`]: Prometheus metrics, prefix gatehouse_agent_ship.

pub mod conn;
pub mod metrics;

use crate::spool::{Pos, Spool, SpoolReader};
use gatehouse_common::ingest::{Batch, MAX_FRAME_BYTES, frame};
pub use metrics::ShipMetrics;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Settings of the shipper.
#[derive(Debug, Clone)]
pub struct ShipConfig {
    /// `https://collector:port` (`http://` only for loopback).
    pub collector_url: String,
    /// CA bundle (PEM) of the collector's certificate; `None` = the Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// Bearer token file (a projected service-account token), re-read per connection.
    pub token_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mTLS to the collector.
    pub client_cert: Option<PathBuf>,
    /// Key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// This agent's name in each batch (the node name).
    pub agent: String,
    /// Most events in one batch.
    pub batch_max_events: usize,
    /// About the most payload bytes in one batch.
    pub batch_max_bytes: usize,
    /// Batches sent before their acks arrive.
    pub window: usize,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Cap of the reconnect delay.
    pub backoff_max: Duration,
    /// With batches in flight, a stream that acks nothing for this long is reconnected.
    pub ack_timeout: Duration,
    /// Limit for TCP connect and TLS handshake.
    pub connect_timeout: Duration,
}

impl ShipConfig {
    /// Defaults for shipping to `collector_url` as `agent`.
    pub fn new(collector_url: impl Into<String>, agent: impl Into<String>) -> Self {
        Self {
            collector_url: collector_url.into(),
            ca_file: None,
            token_file: None,
            client_cert: None,
            client_key: None,
            agent: agent.into(),
            // Large enough that a backlog goes to ClickHouse in few big INSERTs (a part
            // per INSERT is most of ClickHouse's cost: `cargo xtask bench ingest`
            // measured ~20k events/s at 500, ~55k at 5000); under the ingest frame limit.
            batch_max_events: 5000,
            batch_max_bytes: 4 * 1024 * 1024,
            window: 4,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            ack_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Why shipping stopped for now (each leads to a reconnect, never to giving up).
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// Unusable settings (reported at startup).
    #[error("{0}")]
    Config(String),
    /// The token file could not be read.
    #[error("collector credential: {0}")]
    Credential(String),
    /// The collector could not be reached or the connection broke.
    #[error("collector connection: {0}")]
    Connect(String),
    /// The collector answered the stream with a non-200 status.
    #[error("collector refused the ingest stream with {0}: {1}")]
    Refused(http::StatusCode, String),
    /// The collector did not commit a batch.
    #[error("collector did not commit batch {seq}: {error}")]
    NotCommitted {
        /// The batch.
        seq: u64,
        /// The collector's reason.
        error: String,
    },
    /// The peer broke the protocol (an ack out of order, a bad frame, ...).
    #[error("ingest protocol: {0}")]
    Protocol(String),
    /// Batches in flight and no ack for the ack timeout.
    #[error("no ack from the collector for {0:?}")]
    Stalled(Duration),
    /// Reading or acking the spool failed.
    #[error("spool: {0}")]
    Spool(#[from] std::io::Error),
}

/// A batch sent and not yet acked.
struct InFlight {
    seq: u64,
    end: Pos,
    records: u64,
    events: u64,
}

/// Ships one spool to one collector until cancelled.
pub struct Shipper {
    spool: Arc<Spool>,
    config: ShipConfig,
    connector: conn::Connector,
    metrics: ShipMetrics,
}

impl Shipper {
    /// Checks the settings and loads the TLS material (errors here stop the agent).
    pub fn new(
        spool: Arc<Spool>,
        config: ShipConfig,
        metrics: ShipMetrics,
    ) -> Result<Self, ShipError> {
        if config.window == 0 || config.batch_max_events == 0 {
            return Err(ShipError::Config(
                "shipper window and batch size must be positive".into(),
            ));
        }
        let connector = conn::Connector::new(&config)?;
        Ok(Self {
            spool,
            config,
            connector,
            metrics,
        })
    }

    /// Runs until `stop` is cancelled.
    pub fn spawn(self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(stop))
    }

    async fn run(self, stop: CancellationToken) {
        let mut reader = Some(self.spool.reader());
        // Everything before this may have been sent already (see the module docs).
        let mut sent_upto = self.spool.first_own_position();
        let mut attempt: u32 = 0;
        loop {
            // Not raced against `stop` here: an ack being recorded in the spool must finish
            // (the session watches `stop` itself wherever it waits).
            let outcome = self.session(&mut reader, &mut sent_upto, &stop).await;
            if stop.is_cancelled() {
                return;
            }
            self.metrics.connected.set(0);
            self.metrics.in_flight.set(0);
            let (progressed, err) = outcome;
            if progressed {
                attempt = 0;
            }
            let Some(err) = err else { return };
            let delay = backoff(&self.config, attempt);
            attempt = attempt.saturating_add(1);
            self.metrics.reconnects.inc();
            tracing::warn!(error = %err, collector = %self.config.collector_url,
                retry_in_ms = delay.as_millis() as u64, pending = self.spool.pending(),
                "shipping audit events to the collector failed; will resend everything unacked");
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One connection's life. Returns whether any batch was acked, and why it ended
    /// (`None` only when cancelled).
    async fn session(
        &self,
        reader: &mut Option<SpoolReader>,
        sent_upto: &mut Pos,
        stop: &CancellationToken,
    ) -> (bool, Option<ShipError>) {
        let mut progressed = false;
        let err = self
            .session_inner(reader, sent_upto, stop, &mut progressed)
            .await;
        (progressed, err.err())
    }

    async fn session_inner(
        &self,
        reader_slot: &mut Option<SpoolReader>,
        sent_upto: &mut Pos,
        stop: &CancellationToken,
        progressed: &mut bool,
    ) -> Result<(), ShipError> {
        let mut stream = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            stream = self.connector.open(self.config.window) => stream?,
        };
        self.metrics.connected.set(1);
        tracing::info!(collector = %self.config.collector_url, "ingest stream to the collector open");
        // Everything after the cursor is resent: in-flight batches of a dead stream may or
        // may not have been committed (the collector dedups).
        let start = self.spool.cursor();
        if let Some(r) = reader_slot.as_mut() {
            r.seek(start);
        }
        let mut durable = self.spool.subscribe();
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut seq = 0u64;
        loop {
            durable.borrow_and_update();
            while in_flight.len() < self.config.window {
                let from = reader_slot.as_ref().map(SpoolReader::position);
                let batch = self.read(reader_slot).await?;
                if batch.records == 0 {
                    break;
                }
                let fresh = from.is_some_and(|from| from >= *sent_upto);
                *sent_upto = (*sent_upto).max(batch.end);
                seq += 1;
                let events = batch.events.len() as u64;
                let wire = frame(&Batch {
                    agent: self.config.agent.clone(),
                    seq,
                    events: batch.events,
                    fresh,
                })
                .map_err(|e| ShipError::Protocol(e.to_string()))?;
                stream
                    .frames
                    .send(wire)
                    .await
                    .map_err(|_| ShipError::Connect("ingest stream closed".into()))?;
                self.metrics.shipped.inc_by(events);
                in_flight.push_back(InFlight {
                    seq,
                    end: batch.end,
                    records: batch.records,
                    events,
                });
                self.metrics.in_flight.set(in_flight.len() as i64);
            }
            let waiting = !in_flight.is_empty();
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                ack = stream.acks.recv() => {
                    let ack = match ack {
                        Some(Ok(ack)) => ack,
                        Some(Err(e)) => return Err(e),
                        None => return Err(ShipError::Connect("ingest stream ended".into())),
                    };
                    let Some(front) = in_flight.pop_front() else {
                        return Err(ShipError::Protocol(format!("ack {} with no batch in flight", ack.seq)));
                    };
                    if ack.seq != front.seq {
                        return Err(ShipError::Protocol(format!("ack {} out of order (expected {})", ack.seq, front.seq)));
                    }
                    if !ack.committed {
                        return Err(ShipError::NotCommitted { seq: ack.seq, error: ack.error });
                    }
                    let spool = self.spool.clone();
                    let (end, records) = (front.end, front.records);
                    tokio::task::spawn_blocking(move || spool.ack(end, records))
                        .await
                        .map_err(|e| ShipError::Spool(std::io::Error::other(e.to_string())))??;
                    *progressed = true;
                    self.metrics.acked.inc_by(front.events);
                    self.metrics.in_flight.set(in_flight.len() as i64);
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    self.metrics.last_ack.set(i64::try_from(now).unwrap_or(i64::MAX));
                }
                changed = durable.changed(), if in_flight.len() < self.config.window => {
                    if changed.is_err() {
                        // The spool is gone (agent shutting down).
                        return Ok(());
                    }
                }
                () = tokio::time::sleep(self.config.ack_timeout), if waiting => {
                    return Err(ShipError::Stalled(self.config.ack_timeout));
                }
            }
        }
    }

    /// Reads the next batch off the async threads (file I/O blocks).
    async fn read(
        &self,
        slot: &mut Option<SpoolReader>,
    ) -> Result<crate::spool::reader::ReadBatch, ShipError> {
        let Some(mut reader) = slot.take() else {
            return Err(ShipError::Spool(std::io::Error::other("spool reader lost")));
        };
        let (max_events, max_bytes) = (
            self.config.batch_max_events,
            // A batch may overshoot the bound by one record: keep even that under the frame
            // limit, or the batch could never be sent (and shipping would stall for good).
            self.config
                .batch_max_bytes
                .min(MAX_FRAME_BYTES - crate::spool::record::MAX_RECORD_BYTES - 64 * 1024),
        );
        let joined = tokio::task::spawn_blocking(move || {
            let result = reader.read_batch(max_events, max_bytes);
            (reader, result)
        })
        .await;
        match joined {
            Ok((reader, result)) => {
                *slot = Some(reader);
                Ok(result?)
            }
            Err(e) => {
                // The reader is lost with the task; start again from the cursor.
                *slot = Some(self.spool.reader());
                Err(ShipError::Spool(std::io::Error::other(e.to_string())))
            }
        }
    }
}

/// Delay before reconnect `attempt` (0-based): `min * 2^attempt` capped at `max`, then a
/// random point in its upper half, so agents that lost the collector together do not
/// come back in lockstep.
pub fn backoff(config: &ShipConfig, attempt: u32) -> Duration {
    let base = config
        .backoff_min
        .saturating_mul(1u32 << attempt.min(20))
        .min(config.backoff_max);
    let half = base / 2;
    let jitter = rand::random_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let mut c = ShipConfig::new("https://c", "n");
        c.backoff_min = Duration::from_millis(100);
        c.backoff_max = Duration::from_secs(2);
        for attempt in 0..40 {
            let d = backoff(&c, attempt);
            let base = Duration::from_millis(100)
                .saturating_mul(1u32 << attempt.min(20))
                .min(Duration::from_secs(2));
            assert!(
                d >= base / 2 && d <= base,
                "attempt {attempt}: {d:?} vs {base:?}"
            );
        }
    }

    #[test]
    fn plain_http_only_to_loopback() {
        let c = ShipConfig::new("http://collector.example:8080", "n");
        assert!(matches!(
            conn::Connector::new(&c),
            Err(ShipError::Config(_))
        ));
        let c = ShipConfig::new("http://127.0.0.1:8080", "n");
        assert!(conn::Connector::new(&c).is_ok());
        let c = ShipConfig::new("ftp://127.0.0.1", "n");
        assert!(conn::Connector::new(&c).is_err());
    }
}
