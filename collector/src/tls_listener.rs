//! The TLS accept loop the collector's listeners share (ingest, query API): accept,
//! handshake within a deadline, hand the stream to a per-connection server, and on
//! shutdown stop accepting and drain connections up to a deadline.

use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// Time a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Time open connections may take to finish after shutdown.
    pub drain_timeout: Duration,
}

/// Serves `listener` until `shutdown` resolves. `name` labels its logs; `serve_conn` runs
/// one connection (wrapping it in the given [`Watcher`] so that shutdown can drain it).
pub async fn serve<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()>,
    serve_conn: F,
) -> std::io::Result<()>
where
    F: Fn(TlsStream<TcpStream>, SocketAddr, Watcher) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "{name} accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        let serve_conn = serve_conn.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => serve_conn(tls, peer, watcher).await,
                Ok(Err(err)) => tracing::debug!(%peer, error = %err, "{name} TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "{name} TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!("{name} drain deadline reached");
        }
    }
    Ok(())
}
