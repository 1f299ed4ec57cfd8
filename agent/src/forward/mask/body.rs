//! A response body masked as it streams: optional gzip decoding, then a JSON document
//! stream (watches) or text (logs) masker, frame by frame, nothing buffered beyond the
//! masker's own bounded hold-back.

use crate::{Body, BoxError};
use bytes::Bytes;
use flate2::write::GzDecoder;
use gatehouse_common::mask::{JsonStreamMasker, MaskError, TextMasker};
use hyper::body::{Frame, SizeHint};
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The masker a body runs through.
pub enum Masker {
    /// JSON documents (objects, lists, watch events).
    Json(JsonStreamMasker),
    /// Free text (`pods/log`).
    Text(Box<TextMasker>),
}

impl Masker {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), MaskError> {
        match self {
            Self::Json(m) => m.push(input, out),
            Self::Text(m) => {
                m.push(input, out);
                Ok(())
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), MaskError> {
        match self {
            Self::Json(m) => m.finish(out),
            Self::Text(m) => {
                m.finish(out);
                Ok(())
            }
        }
    }
}

/// Errors masking a body.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The masker refused the content.
    #[error("masking the response")]
    Mask(#[from] MaskError),
    /// The gzip stream is corrupt.
    #[error("decoding the gzip response")]
    Gzip(#[source] std::io::Error),
    /// Decoded data grew past the limit (a gzip bomb, or an oversized document).
    #[error("decoded response larger than the masking limit of {0} bytes")]
    TooLarge(usize),
}

/// Incremental gzip decoding with a bound on each chunk's decoded size.
pub struct Gunzip {
    decoder: GzDecoder<Vec<u8>>,
    limit: usize,
}

impl Gunzip {
    /// A decoder refusing to produce more than `limit` bytes from one chunk.
    pub fn new(limit: usize) -> Self {
        Self {
            decoder: GzDecoder::new(Vec::new()),
            limit,
        }
    }

    /// Decodes `input`, returning what it produced.
    pub fn push(&mut self, input: &[u8]) -> Result<Vec<u8>, BodyError> {
        // Small slices, so a bomb is caught after a bounded amount of output.
        for piece in input.chunks(4096) {
            self.decoder.write_all(piece).map_err(BodyError::Gzip)?;
            if self.decoder.get_ref().len() > self.limit {
                return Err(BodyError::TooLarge(self.limit));
            }
        }
        Ok(std::mem::take(self.decoder.get_mut()))
    }

    /// Ends the stream (a truncated gzip stream is an error).
    pub fn finish(&mut self) -> Result<Vec<u8>, BodyError> {
        self.decoder.try_finish().map_err(BodyError::Gzip)?;
        Ok(std::mem::take(self.decoder.get_mut()))
    }
}

/// Decodes and masks a complete body.
pub fn mask_whole(
    raw: &[u8],
    gunzip: Option<Gunzip>,
    mut masker: Masker,
) -> Result<Vec<u8>, BodyError> {
    let decoded;
    let data = match gunzip {
        Some(mut g) => {
            let mut d = g.push(raw)?;
            d.extend_from_slice(&g.finish()?);
            decoded = d;
            &decoded[..]
        }
        None => raw,
    };
    let mut out = Vec::with_capacity(data.len());
    masker.push(data, &mut out)?;
    masker.finish(&mut out)?;
    Ok(out)
}

/// `inner`, decoded and masked frame by frame.
pub struct MaskedBody {
    inner: Body,
    gunzip: Option<Gunzip>,
    masker: Masker,
    done: bool,
}

impl MaskedBody {
    /// Masks `inner` with `masker`, gunzipping first when `gunzip` is set.
    pub fn new(inner: Body, gunzip: Option<Gunzip>, masker: Masker) -> Self {
        Self {
            inner,
            gunzip,
            masker,
            done: false,
        }
    }

    fn chunk(&mut self, data: &[u8]) -> Result<Vec<u8>, BodyError> {
        let decoded;
        let data = match &mut self.gunzip {
            Some(g) => {
                decoded = g.push(data)?;
                &decoded[..]
            }
            None => data,
        };
        let mut out = Vec::new();
        self.masker.push(data, &mut out)?;
        Ok(out)
    }

    fn end(&mut self) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        if let Some(g) = &mut self.gunzip {
            let rest = g.finish()?;
            self.masker.push(&rest, &mut out)?;
        }
        self.masker.finish(&mut out)?;
        Ok(out)
    }

    fn fail(&mut self, err: BodyError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // The client sees the stream break rather than unmasked data. Only the reason is
        // logged, never content.
        self.done = true;
        tracing::warn!(error = %crate::authenticate::jwks::error_chain(&err), "response stream cut: it could not be masked");
        Poll::Ready(Some(Err(Box::new(err))))
    }
}

impl hyper::body::Body for MaskedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => match this.chunk(&data) {
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out.into())))),
                        Err(e) => return this.fail(e),
                    },
                    // Trailers pass through untouched.
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(None) => {
                    this.done = true;
                    return match this.end() {
                        Ok(out) if out.is_empty() => Poll::Ready(None),
                        Ok(out) => Poll::Ready(Some(Ok(Frame::data(out.into())))),
                        Err(e) => this.fail(e),
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        // Masking changes lengths: unknown.
        SizeHint::default()
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use gatehouse_common::mask::Profile;
    use http_body_util::BodyExt;
    use std::sync::Arc;

    fn body_of(chunks: Vec<Vec<u8>>) -> Body {
        let stream = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from(c)))),
        );
        http_body_util::StreamBody::new(stream).boxed()
    }

    fn json_masker() -> Masker {
        Masker::Json(JsonStreamMasker::new(
            Arc::new(Profile::builtin_default().unwrap()),
            1 << 20,
        ))
    }

    #[tokio::test]
    async fn gzip_watch_stream_is_decoded_and_masked() {
        let events = concat!(
            "{\"type\":\"ADDED\",\"object\":{\"kind\":\"Secret\",\"data\":{\"k\":\"c2VjcmV0\"}}}\n",
            "{\"type\":\"MODIFIED\",\"object\":{\"kind\":\"Secret\",\"data\":{\"k\":\"c2VjcmV0Mg==\"}}}\n"
        );
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(events.as_bytes()).unwrap();
        let compressed = gz.finish().unwrap();
        let chunks = compressed.chunks(7).map(<[u8]>::to_vec).collect();
        let body = MaskedBody::new(body_of(chunks), Some(Gunzip::new(1 << 20)), json_masker());
        let out = body.collect().await.unwrap().to_bytes();
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(!text.contains("c2VjcmV0"), "{text}");
        assert_eq!(text.lines().count(), 2);
    }

    #[tokio::test]
    async fn a_bad_stream_ends_in_an_error_not_in_data() {
        let body = MaskedBody::new(
            body_of(vec![
                b"{\"kind\":\"Secret\",\"data\":{\"k\":\"c2VjcmV0\"}".to_vec(),
            ]),
            None,
            json_masker(),
        );
        assert!(body.collect().await.is_err());
        let body = MaskedBody::new(
            body_of(vec![b"not gzip at all".to_vec()]),
            Some(Gunzip::new(1 << 20)),
            json_masker(),
        );
        assert!(body.collect().await.is_err());
    }

    #[tokio::test]
    async fn a_gzip_bomb_is_refused() {
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![b' '; 8 << 20]).unwrap();
        let bomb = gz.finish().unwrap();
        let mut g = Gunzip::new(1 << 20);
        assert!(matches!(g.push(&bomb), Err(BodyError::TooLarge(_))));
    }
}
