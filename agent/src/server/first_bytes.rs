//! Bounds the time a new connection may take to show which HTTP version it speaks.
//!
//! hyper's auto server first reads until it can tell the h2 preface from an HTTP/1.1
//! request, with no timeout of its own, and its HTTP/1.1 header timeout and h2 keep-alive
//! start only afterwards: a client that completes TLS and then sends nothing (or a part of
//! the preface) would hold a connection slot forever. So the listener reads those first
//! bytes itself, under the header-read timeout, and hands them back to hyper in front of
//! the stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Why a connection was dropped before hyper saw it.
#[derive(Debug, thiserror::Error)]
pub enum FirstBytesError {
    /// Nothing decisive arrived within the timeout.
    #[error("no HTTP request or h2 preface within {0:?}")]
    TimedOut(Duration),
    /// The client closed the connection first.
    #[error("connection closed before the first request")]
    Closed,
    /// Reading failed.
    #[error("reading the first bytes: {0}")]
    Io(#[from] io::Error),
}

/// Reads, within `timeout`, just enough bytes to tell h2 from HTTP/1.1: the full preface,
/// or up to the first byte that departs from it. Returns those bytes.
pub async fn read_version_prefix<IO>(
    io: &mut IO,
    timeout: Duration,
) -> Result<Vec<u8>, FirstBytesError>
where
    IO: AsyncRead + Unpin,
{
    let read = async {
        let mut buf = vec![0u8; H2_PREFACE.len()];
        let mut len = 0;
        loop {
            let n = io.read(&mut buf[len..]).await?;
            if n == 0 {
                return Err(FirstBytesError::Closed);
            }
            len += n;
            if len == H2_PREFACE.len() || buf[..len] != H2_PREFACE[..len] {
                buf.truncate(len);
                return Ok(buf);
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| FirstBytesError::TimedOut(timeout))?
}

/// A stream whose first reads return `prefix` (bytes already read from it).
#[derive(Debug)]
pub struct Prefixed<IO> {
    prefix: Vec<u8>,
    at: usize,
    io: IO,
}

impl<IO> Prefixed<IO> {
    /// `io` with `prefix` put back in front of it.
    pub fn new(prefix: Vec<u8>, io: IO) -> Self {
        Self { prefix, at: 0, io }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.at);
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new(); // free it: the connection may live for hours
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncWriteExt, duplex};

    #[tokio::test]
    async fn http1_is_decided_at_the_first_byte_and_replayed() -> anyhow::Result<()> {
        let (mut client, mut server) = duplex(1024);
        client.write_all(b"GET /version HTTP/1.1\r\n\r\n").await?;
        let prefix = read_version_prefix(&mut server, Duration::from_secs(5)).await?;
        // Never more than the preface's length, whatever the client already sent.
        assert!(!prefix.is_empty() && prefix.len() <= H2_PREFACE.len());
        assert!(b"GET /version HTTP/1.1\r\n\r\n".starts_with(&prefix));
        let mut replayed = Prefixed::new(prefix, server);
        let mut head = vec![0u8; 25];
        replayed.read_exact(&mut head).await?;
        assert_eq!(head, b"GET /version HTTP/1.1\r\n\r\n");
        Ok(())
    }

    #[tokio::test]
    async fn h2_needs_the_whole_preface_split_anywhere() -> anyhow::Result<()> {
        let (mut client, mut server) = duplex(1024);
        let reader = tokio::spawn(async move {
            let prefix = read_version_prefix(&mut server, Duration::from_secs(5)).await?;
            Ok::<_, FirstBytesError>((prefix, server))
        });
        for part in H2_PREFACE.chunks(5) {
            client.write_all(part).await?;
            client.flush().await?;
            tokio::task::yield_now().await;
        }
        client.write_all(b"\0\0\0\x04").await?; // a SETTINGS header follows
        let (prefix, server) = reader.await??;
        assert_eq!(prefix, H2_PREFACE);
        let mut replayed = Prefixed::new(prefix, server);
        let mut all = vec![0u8; 28];
        replayed.read_exact(&mut all).await?;
        assert_eq!(&all[..24], H2_PREFACE);
        assert_eq!(&all[24..], b"\0\0\0\x04");
        // Writes go straight through.
        replayed.write_all(b"pong").await?;
        let mut back = [0u8; 4];
        client.read_exact(&mut back).await?;
        assert_eq!(&back, b"pong");
        Ok(())
    }

    #[tokio::test]
    async fn silence_or_a_partial_preface_times_out() -> anyhow::Result<()> {
        let (_quiet, mut server) = duplex(1024);
        let err = read_version_prefix(&mut server, Duration::from_millis(50)).await;
        assert!(matches!(err, Err(FirstBytesError::TimedOut(_))), "{err:?}");
        let (mut client, mut server) = duplex(1024);
        client.write_all(&H2_PREFACE[..10]).await?;
        let err = read_version_prefix(&mut server, Duration::from_millis(50)).await;
        assert!(matches!(err, Err(FirstBytesError::TimedOut(_))), "{err:?}");
        Ok(())
    }

    #[tokio::test]
    async fn a_client_closing_first_is_closed() {
        let (client, mut server) = duplex(1024);
        drop(client);
        let err = read_version_prefix(&mut server, Duration::from_secs(5)).await;
        assert!(matches!(err, Err(FirstBytesError::Closed)), "{err:?}");
    }
}
