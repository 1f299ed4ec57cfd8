//! The TLS listener: rustls with ALPN h2 + http/1.1, hyper's auto server with upgrades,
//! and graceful shutdown with a drain deadline. [`run`] is what `main` calls.

use crate::authenticate::Authenticator;
use crate::authenticate::jwks::KeyStore;
use crate::config::{AgentConfig, ConfigError};
use crate::forward::{ForwardError, Forwarder};
use crate::proxy::Proxy;
use crate::tls::TlsError;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// TLS material could not be loaded.
    #[error("loading TLS material")]
    Tls(#[from] TlsError),
    /// The audit log could not be opened.
    #[error("opening the audit log {0:?}")]
    AuditLog(String, #[source] std::io::Error),
    /// The upstream client could not be built.
    #[error("setting up the upstream client")]
    Forward(#[from] ForwardError),
}

/// Builds the request path from `config`.
pub fn build_proxy(config: &AgentConfig) -> Result<Proxy, ServerError> {
    config.validate()?;
    let oidc_tls = crate::tls::client_config(config.oidc.ca_file.as_deref())?;
    let keys = KeyStore::remote(
        &config.oidc.issuer_url,
        oidc_tls,
        config.oidc.jwks_min_refresh,
    );
    let authenticator = Authenticator::new(config.oidc.clone(), keys);
    let forwarder = Forwarder::new(&config.upstream)?;
    // Audit: always the tracing target, plus the JSON-lines file when asked for.
    let mut sink =
        crate::audit::sink::FanOut::new().with(Arc::new(crate::audit::sink::TracingSink));
    if let Some(arg) = &config.audit_log {
        let target = crate::audit::jsonl::Target::parse(arg);
        let (jsonl, _writer) = crate::audit::jsonl::JsonLinesSink::start(target)
            .map_err(|e| ServerError::AuditLog(arg.clone(), e))?;
        sink = sink.with(Arc::new(jsonl));
    }
    Ok(Proxy::new(
        authenticator,
        forwarder,
        Arc::new(sink),
        config.site.clone(),
    ))
}

/// Serves kubectl on `listener` until `shutdown` resolves, then drains in-flight
/// requests for up to `config.drain_timeout`.
pub async fn run(
    listener: TcpListener,
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let proxy = Arc::new(build_proxy(&config)?);
    let tls = crate::tls::server_config(&config.tls_cert_file, &config.tls_key_file)?;
    tracing::info!(upstream = %config.upstream.url, issuer = %config.oidc.issuer_url, "gatehouse agent configured");
    serve(listener, proxy, Arc::new(tls), &config, shutdown).await;
    Ok(())
}

/// The accept loop behind [`run`], with the request path and TLS settings supplied
/// (tests build a [`Proxy`] with fixed keys). Uses the timeouts of `config`.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Arc<rustls::ServerConfig>,
    config: &AgentConfig,
    shutdown: impl Future<Output = ()>,
) {
    let tls = tokio_rustls::TlsAcceptor::from(tls);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let graceful = GracefulShutdown::new();
    let local = listener.local_addr().ok();
    tracing::info!(listen = ?local, "gatehouse agent listening");
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let (tls, proxy, builder) = (tls.clone(), proxy.clone(), builder.clone());
        let watcher = graceful.watcher();
        let handshake_timeout = config.tls_handshake_timeout;
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(handshake_timeout, tls.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    tracing::debug!(peer = %peer, error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, peer).await) }
            });
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(err) = watcher.watch(conn).await {
                tracing::debug!(peer = %peer, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        deadline_s = config.drain_timeout.as_secs(),
        "draining connections"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(config.drain_timeout) => {
            tracing::warn!("drain deadline reached; closing remaining connections");
        }
    }
}
