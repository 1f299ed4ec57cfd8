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

/// Starts serving one stream from `agent` and returns the streaming `200` response.
pub fn start<B>(state: Arc<IngestState>, agent: Arc<str>, body: B) -> Response<IngestBody>
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

async fn read_frames<B>(mut body: B, tx: mpsc::Sender<Item>, agent: Arc<str>)
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
                tracing::debug!(%agent, error = %err, "ingest request body failed");
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
                Ok(Some(batch)) if *batch.agent != *agent => Item::Fatal(format!(
                    "batch from agent {:?} on a stream authenticated as {agent:?}",
                    batch.agent
                )),
                Ok(Some(batch)) if batch.seq <= last_seq => Item::Fatal(format!(
                    "batch seq {} does not follow seq {last_seq}",
                    batch.seq
                )),
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
                match state.store.insert(&batch.events).await {
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
