//! A response body wrapper that counts bytes and emits the request's audit event exactly
//! once, when the body ends, fails or is dropped (client gone), so streams get their
//! real duration. Frames pass through untouched: no buffering, no copies.

use super::event::Outcome;
use super::sink::AuditSink;
use crate::Body;
use gatehouse_common::audit::{ApiRequestEvent, AuditEvent};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// The event waiting for its body to finish.
struct Pending {
    event: ApiRequestEvent,
    sink: Arc<dyn AuditSink>,
    started: Instant,
}

/// `inner`, counting bytes out and emitting `event` once at the end.
pub struct AuditedBody {
    inner: Body,
    bytes_out: u64,
    bytes_in: Option<Arc<std::sync::atomic::AtomicU64>>,
    pending: Option<Pending>,
}

impl AuditedBody {
    /// Wraps `inner`; `out` holds the values known at the response headers.
    pub fn new(
        inner: Body,
        mut event: ApiRequestEvent,
        out: Outcome,
        sink: Arc<dyn AuditSink>,
        started: Instant,
    ) -> Self {
        event.status_code = out.status_code;
        event.answered_by = out.answered_by;
        event.latency_ms = out.latency_ms;
        event.bytes_in = out.bytes_in;
        Self {
            inner,
            bytes_out: 0,
            bytes_in: None,
            pending: Some(Pending {
                event,
                sink,
                started,
            }),
        }
    }

    /// Takes `bytes_in` from `count` (a [`super::request_body::CountedRequestBody`]'s
    /// counter) when the event is emitted.
    pub fn with_request_bytes(mut self, count: Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.bytes_in = Some(count);
        self
    }

    fn finish(&mut self, error: Option<String>) {
        if let Some(Pending {
            mut event,
            sink,
            started,
        }) = self.pending.take()
        {
            event.bytes_out = self.bytes_out;
            if let Some(count) = &self.bytes_in {
                event.bytes_in = count.load(std::sync::atomic::Ordering::Relaxed);
            }
            event.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            if let (Some(err), true) = (error, event.error.is_empty()) {
                event.error = err;
            }
            sink.emit(&AuditEvent::ApiRequest(event));
        }
    }
}

impl HttpBody for AuditedBody {
    type Data = bytes::Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(err))) => {
                let msg = format!("response body failed: {err}");
                self.finish(Some(msg));
            }
            Poll::Ready(None) => self.finish(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AuditedBody {
    fn drop(&mut self) {
        // Client gone before the end: the event still goes out, once.
        self.finish(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Collect(Mutex<Vec<ApiRequestEvent>>);
    impl AuditSink for Collect {
        fn emit(&self, event: &AuditEvent) {
            if let (AuditEvent::ApiRequest(e), Ok(mut seen)) = (event, self.0.lock()) {
                seen.push(e.clone());
            }
        }
    }

    fn seen(c: &Collect) -> Vec<ApiRequestEvent> {
        c.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn outcome() -> Outcome {
        Outcome {
            status_code: 200,
            ..Outcome::default()
        }
    }

    #[tokio::test]
    async fn emits_once_at_the_end_with_bytes() -> anyhow::Result<()> {
        let sink = Arc::new(Collect::default());
        let body = AuditedBody::new(
            crate::full_body("hello"),
            ApiRequestEvent::default(),
            outcome(),
            sink.clone(),
            Instant::now(),
        );
        let bytes = body
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!(e))?
            .to_bytes();
        assert_eq!(&bytes[..], b"hello");
        let events = seen(&sink);
        assert_eq!(events.len(), 1, "exactly one event after end and drop");
        assert_eq!((events[0].bytes_out, events[0].status_code), (5, 200));
        Ok(())
    }

    #[tokio::test]
    async fn emits_when_dropped_unfinished_and_not_before() -> anyhow::Result<()> {
        let sink = Arc::new(Collect::default());
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<Frame<bytes::Bytes>, crate::BoxError>>(4);
        let stream = http_body_util::StreamBody::new(tokio_stream_from(rx));
        let mut body = AuditedBody::new(
            BodyExt::boxed(stream),
            ApiRequestEvent::default(),
            outcome(),
            sink.clone(),
            Instant::now(),
        );
        tx.send(Ok(Frame::data(bytes::Bytes::from_static(b"abc"))))
            .await?;
        let frame = body.frame().await;
        assert!(matches!(frame, Some(Ok(_))));
        assert!(seen(&sink).is_empty(), "a live stream has no event yet");
        drop(body);
        let events = seen(&sink);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].bytes_out, 3);
        Ok(())
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Send + Sync {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
