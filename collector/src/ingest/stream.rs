//! One ingest stream: read [`Batch`] frames from the request body, commit each to the store,
//! answer one [`Ack`] frame per batch, in order, only after the commit.
//!
//! A reader task decodes frames and hands batches to a committer task through a channel of
//! `max_in_flight` slots; when the store is slow the channel fills, the reader stops polling
//! the body, and HTTP/2 flow control stops the agent. A protocol error (garbage or oversized
//! frame, a batch naming another agent, a non-increasing `seq`) is answered, after the acks
//! of the batches before it, with an error frame — an [`Ack`] with `seq: 0`,
//! `committed: false` and the reason — and the stream is closed; nothing of it is stored.

use super::{IngestBody, IngestState};
use bytes::Bytes;
use gatehouse_common::ingest::{Ack, Batch, FrameDecoder, frame};
use http::{Response, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::mpsc;

/// Longest `event_id` accepted (agents send UUIDs; the id is the idempotency key and goes
/// into the store's duplicate-check queries).
pub const MAX_EVENT_ID_BYTES: usize = 128;

fn valid_event_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_EVENT_ID_BYTES
}

/// What the reader hands the committer.
enum Item {
    Batch(Batch),
    /// The stream is broken; answer this and stop.
    Fatal(String),
}

/// The response body: ack frames as the committer produces them.
struct AckBody(mpsc::Receiver<Bytes>);

impl Body for AckBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// Starts serving one stream from `agent` and returns the streaming `200` response. Every
/// batch must name `agent`; `None` (a token without a node binding) accepts any name.
pub fn start<B>(state: Arc<IngestState>, agent: Option<Arc<str>>, body: B) -> Response<IngestBody>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display + Send,
{
    let (batch_tx, batch_rx) = mpsc::channel(state.config.max_in_flight.max(1));
    let (ack_tx, ack_rx) = mpsc::channel(state.config.max_in_flight.max(1) + 1);
    tokio::spawn(read_frames(body, batch_tx, agent));
    tokio::spawn(commit_batches(state, batch_rx, ack_tx));
    let mut resp = Response::new(AckBody(ack_rx).boxed());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(gatehouse_common::ingest::FRAMES_CONTENT_TYPE),
    );
    resp
}

async fn read_frames<B>(mut body: B, tx: mpsc::Sender<Item>, agent: Option<Arc<str>>)
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display + Send,
{
    let mut decoder = FrameDecoder::new();
    let mut last_seq = 0u64;
    loop {
        let chunk = match body.frame().await {
            None => {
                if let Err(err) = decoder.finish() {
                    let _ = tx.send(Item::Fatal(err.to_string())).await;
                }
                return;
            }
            Some(Err(err)) => {
                // The agent went away (reset, connection lost): nobody to answer.
                tracing::debug!(?agent, error = %err, "ingest request body failed");
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_trailers) => continue,
            },
        };
        decoder.push(&chunk);
        loop {
            let item = match decoder.next_frame::<Batch>() {
                Ok(None) => break,
                Ok(Some(batch)) if agent.as_deref().is_some_and(|a| *a != *batch.agent) => {
                    Item::Fatal(format!(
                        "batch from agent {:?} on a stream authenticated as {:?}",
                        batch.agent,
                        agent.as_deref().unwrap_or_default()
                    ))
                }
                Ok(Some(batch)) if batch.seq <= last_seq => Item::Fatal(format!(
                    "batch seq {} does not follow seq {last_seq}",
                    batch.seq
                )),
                Ok(Some(batch)) if batch.events.iter().any(|e| !valid_event_id(e.event_id())) => {
                    Item::Fatal(format!(
                        "batch seq {} has an event with an empty event_id or one over \
                         {MAX_EVENT_ID_BYTES} bytes",
                        batch.seq
                    ))
                }
                Ok(Some(batch)) => {
                    last_seq = batch.seq;
                    Item::Batch(batch)
                }
                Err(err) => Item::Fatal(err.to_string()),
            };
            let fatal = matches!(item, Item::Fatal(_));
            // Waits while `max_in_flight` batches are queued: the backpressure point.
            if tx.send(item).await.is_err() || fatal {
                return;
            }
        }
    }
}

async fn commit_batches(
    state: Arc<IngestState>,
    mut rx: mpsc::Receiver<Item>,
    acks: mpsc::Sender<Bytes>,
) {
    let metrics = &state.metrics;
    while let Some(item) = rx.recv().await {
        let ack = match item {
            Item::Fatal(reason) => {
                metrics.protocol_errors.inc();
                tracing::warn!(%reason, "ingest stream closed on a protocol error");
                let ack = Ack {
                    seq: 0,
                    committed: false,
                    inserted: 0,
                    error: format!("protocol error: {reason}"),
                };
                if let Ok(bytes) = frame(&ack) {
                    let _ = acks.send(bytes).await;
                }
                return;
            }
            Item::Batch(batch) => {
                metrics.batches.inc();
                metrics.events.inc_by(batch.events.len() as u64);
                let started = Instant::now();
                // A fresh batch (never sent before, per its agent) needs no lookup of
                // stored ids; a re-send always gets one.
                let commit = if batch.fresh {
                    state.store.insert_fresh(&batch.events)
                } else {
                    state.store.insert(&batch.events)
                };
                match commit.await {
                    Ok(out) => {
                        metrics
                            .commit_seconds
                            .observe(started.elapsed().as_secs_f64());
                        metrics.inserted.inc_by(out.inserted);
                        metrics.duplicates.inc_by(out.duplicates);
                        Ack {
                            seq: batch.seq,
                            committed: true,
                            inserted: out.inserted,
                            error: String::new(),
                        }
                    }
                    Err(err) => {
                        metrics.store_errors.inc();
                        tracing::warn!(agent = %batch.agent, seq = batch.seq, error = %err, "batch not committed");
                        Ack {
                            seq: batch.seq,
                            committed: false,
                            inserted: 0,
                            error: format!("store unavailable: {err}"),
                        }
                    }
                }
            }
        };
        let Ok(bytes) = frame(&ack) else {
            return;
        };
        if acks.send(bytes).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::IngestConfig;
    use crate::metrics::IngestMetrics;
    use crate::store::memory::MemoryStore;
    use crate::store::{AuditStore, InsertOutcome, StoreError};
    use futures_util::future::BoxFuture;
    use gatehouse_common::audit::{ApiRequestEvent, AuditEvent};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(10);

    /// A request body fed by the test that counts the chunks the reader pulled.
    struct CountingBody {
        rx: mpsc::Receiver<Bytes>,
        pulled: Arc<AtomicUsize>,
    }

    impl Body for CountingBody {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            let polled = self.rx.poll_recv(cx);
            if let Poll::Ready(Some(_)) = &polled {
                self.pulled.fetch_add(1, Ordering::SeqCst);
            }
            polled.map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    /// A store whose inserts wait until the test opens the gate.
    struct GatedStore {
        inner: MemoryStore,
        gate: tokio::sync::Semaphore,
        calls: AtomicUsize,
    }

    impl AuditStore for GatedStore {
        fn insert<'a>(
            &'a self,
            events: &'a [AuditEvent],
        ) -> BoxFuture<'a, Result<InsertOutcome, StoreError>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                let permit = self.gate.acquire().await;
                drop(permit);
                self.inner.insert(events).await
            })
        }

        fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
            self.inner.health()
        }
    }

    fn event(id: &str) -> AuditEvent {
        AuditEvent::ApiRequest(ApiRequestEvent {
            event_id: id.into(),
            ..ApiRequestEvent::default()
        })
    }

    fn batch_frame(
        agent: &str,
        seq: u64,
        ids: &[&str],
    ) -> Result<Bytes, Box<dyn std::error::Error>> {
        Ok(frame(&Batch {
            agent: agent.into(),
            seq,
            events: ids.iter().map(|id| event(id)).collect(),
            fresh: false,
        })?)
    }

    /// A store that counts which insert each batch went to.
    #[derive(Default)]
    struct RoutingStore {
        inner: MemoryStore,
        checked: AtomicUsize,
        fresh: AtomicUsize,
    }

    impl AuditStore for RoutingStore {
        fn insert<'a>(
            &'a self,
            events: &'a [AuditEvent],
        ) -> BoxFuture<'a, Result<InsertOutcome, StoreError>> {
            self.checked.fetch_add(1, Ordering::SeqCst);
            self.inner.insert(events)
        }

        fn insert_fresh<'a>(
            &'a self,
            events: &'a [AuditEvent],
        ) -> BoxFuture<'a, Result<InsertOutcome, StoreError>> {
            self.fresh.fetch_add(1, Ordering::SeqCst);
            self.inner.insert_fresh(events)
        }

        fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
            self.inner.health()
        }
    }

    fn state(store: Arc<dyn AuditStore>, max_in_flight: usize) -> Arc<IngestState> {
        Arc::new(IngestState {
            store,
            metrics: IngestMetrics::register(&mut prometheus_client::registry::Registry::default()),
            config: IngestConfig {
                max_in_flight,
                ..IngestConfig::default()
            },
            token_reviewer: None,
            policy: None,
        })
    }

    struct Acks {
        body: IngestBody,
        decoder: FrameDecoder,
    }

    impl Acks {
        async fn next(&mut self) -> Result<Option<Ack>, Box<dyn std::error::Error>> {
            loop {
                if let Some(ack) = self.decoder.next_frame::<Ack>()? {
                    return Ok(Some(ack));
                }
                match tokio::time::timeout(WAIT, self.body.frame()).await? {
                    None => return Ok(None),
                    Some(Ok(f)) => {
                        if let Ok(data) = f.into_data() {
                            self.decoder.push(&data);
                        }
                    }
                    Some(Err(never)) => match never {},
                }
            }
        }
    }

    fn open(state: Arc<IngestState>, agent: &str) -> (mpsc::Sender<Bytes>, Arc<AtomicUsize>, Acks) {
        let (tx, rx) = mpsc::channel(64);
        let pulled = Arc::new(AtomicUsize::new(0));
        let body = CountingBody {
            rx,
            pulled: pulled.clone(),
        };
        let resp = start(state, Some(Arc::from(agent)), body);
        let acks = Acks {
            body: resp.into_body(),
            decoder: FrameDecoder::new(),
        };
        (tx, pulled, acks)
    }

    #[tokio::test]
    async fn acks_follow_commits_in_order_and_resends_add_nothing()
    -> Result<(), Box<dyn std::error::Error>> {
        let store = Arc::new(MemoryStore::new());
        let (tx, _, mut acks) = open(state(store.clone(), 2), "n");
        tx.send(batch_frame("n", 1, &["a", "b"])?).await?;
        tx.send(batch_frame("n", 2, &["b", "c"])?).await?;
        drop(tx);
        let first = acks.next().await?.ok_or("no ack")?;
        let second = acks.next().await?.ok_or("no ack")?;
        assert_eq!((first.seq, first.committed, first.inserted), (1, true, 2));
        assert_eq!(
            (second.seq, second.committed, second.inserted),
            (2, true, 1)
        );
        assert!(acks.next().await?.is_none());
        assert_eq!(store.events().len(), 3);
        Ok(())
    }

    #[tokio::test]
    async fn only_batches_marked_fresh_skip_the_checked_insert()
    -> Result<(), Box<dyn std::error::Error>> {
        let store = Arc::new(RoutingStore::default());
        let (tx, _, mut acks) = open(state(store.clone(), 2), "n");
        let fresh = frame(&Batch {
            agent: "n".into(),
            seq: 1,
            events: vec![event("a"), event("b")],
            fresh: true,
        })?;
        tx.send(fresh).await?;
        tx.send(batch_frame("n", 2, &["b", "c"])?).await?;
        drop(tx);
        let first = acks.next().await?.ok_or("no ack")?;
        let second = acks.next().await?.ok_or("no ack")?;
        assert_eq!((first.seq, first.inserted), (1, 2));
        assert_eq!((second.seq, second.inserted), (2, 1));
        assert_eq!(store.fresh.load(Ordering::SeqCst), 1);
        assert_eq!(store.checked.load(Ordering::SeqCst), 1);
        assert_eq!(store.inner.events().len(), 3);
        Ok(())
    }

    #[tokio::test]
    async fn store_down_answers_uncommitted_and_recovers() -> Result<(), Box<dyn std::error::Error>>
    {
        let store = Arc::new(MemoryStore::new());
        let (tx, _, mut acks) = open(state(store.clone(), 2), "n");
        store.set_down(true);
        tx.send(batch_frame("n", 1, &["a"])?).await?;
        let ack = acks.next().await?.ok_or("no ack")?;
        assert!(
            !ack.committed && ack.error.contains("store unavailable"),
            "{ack:?}"
        );
        store.set_down(false);
        tx.send(batch_frame("n", 2, &["a"])?).await?;
        let ack = acks.next().await?.ok_or("no ack")?;
        assert_eq!((ack.seq, ack.committed, ack.inserted), (2, true, 1));
        Ok(())
    }

    #[tokio::test]
    async fn a_slow_store_stops_the_reader_after_max_in_flight_batches()
    -> Result<(), Box<dyn std::error::Error>> {
        let store = Arc::new(GatedStore {
            inner: MemoryStore::new(),
            gate: tokio::sync::Semaphore::new(0),
            calls: AtomicUsize::new(0),
        });
        let max_in_flight = 2;
        let (tx, pulled, mut acks) = open(state(store.clone(), max_in_flight), "n");
        for seq in 1..=20u64 {
            tx.send(batch_frame("n", seq, &[&format!("e{seq}")])?)
                .await?;
        }
        // Wait until the committer is stuck in the store with the first batch...
        while store.calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // ...and give the reader every chance to run ahead (a single-threaded runtime:
        // yielding lets it run until it blocks).
        for _ in 0..1000 {
            tokio::task::yield_now().await;
        }
        // One batch in the store, `max_in_flight` queued, one held by the blocked reader.
        let read = pulled.load(Ordering::SeqCst);
        assert!(read <= max_in_flight + 2, "reader pulled {read} chunks");
        store.gate.add_permits(1000);
        for seq in 1..=20u64 {
            let ack = acks.next().await?.ok_or("no ack")?;
            assert_eq!((ack.seq, ack.committed), (seq, true));
        }
        assert_eq!(pulled.load(Ordering::SeqCst), 20);
        Ok(())
    }

    #[tokio::test]
    async fn wrong_agent_and_garbage_are_answered_after_earlier_acks_and_close()
    -> Result<(), Box<dyn std::error::Error>> {
        let store = Arc::new(MemoryStore::new());
        let (tx, _, mut acks) = open(state(store.clone(), 2), "n");
        tx.send(batch_frame("n", 1, &["a"])?).await?;
        tx.send(batch_frame("other", 2, &["b"])?).await?;
        assert!(
            acks.next()
                .await?
                .is_some_and(|a| a.seq == 1 && a.committed)
        );
        let err = acks.next().await?.ok_or("no error frame")?;
        assert_eq!((err.seq, err.committed), (0, false));
        assert!(err.error.contains("\"other\""), "{err:?}");
        assert!(acks.next().await?.is_none());

        let (tx, _, mut acks) = open(state(store.clone(), 2), "n");
        tx.send(batch_frame("n", 1, &["ok", ""])?).await?;
        let err = acks.next().await?.ok_or("no error frame")?;
        assert!(err.error.contains("empty event_id"), "{err:?}");
        assert!(acks.next().await?.is_none());

        let long = "x".repeat(MAX_EVENT_ID_BYTES + 1);
        let (tx, _, mut acks) = open(state(store.clone(), 2), "n");
        tx.send(batch_frame("n", 1, &[&long])?).await?;
        assert!(
            acks.next()
                .await?
                .is_some_and(|a| !a.committed && a.seq == 0)
        );

        let (tx, _, mut acks) = open(state(store.clone(), 2), "n");
        tx.send(Bytes::from_static(&[0, 0, 0, 2, b'[', b'1']))
            .await?;
        let err = acks.next().await?.ok_or("no error frame")?;
        assert!(err.error.starts_with("protocol error:"), "{err:?}");
        assert!(acks.next().await?.is_none());
        assert_eq!(store.events().len(), 1);
        Ok(())
    }
}
