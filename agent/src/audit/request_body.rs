//! A request body wrapper that counts the bytes kubectl sends (`bytes_in` of the audit
//! event) as they stream upstream. Frames pass through untouched.

use crate::BoxError;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

/// `inner`, adding the length of every data frame to a shared counter.
pub struct CountedRequestBody {
    inner: Incoming,
    count: Arc<AtomicU64>,
}

impl CountedRequestBody {
    /// Wraps `inner`; `count` is read when the request's audit event is emitted.
    pub fn new(inner: Incoming, count: Arc<AtomicU64>) -> Self {
        Self { inner, count }
    }
}

impl HttpBody for CountedRequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled.map_err(|e| Box::new(e) as BoxError)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
