//! The TLS listener: rustls with ALPN h2 + http/1.1, hyper's auto server with upgrades,
//! limits against slow and hostile clients, a connection cap, and graceful shutdown with a
//! drain deadline. [`run`] is what `main` calls; it also starts the ops listener.

use crate::authenticate::Authenticator;
use crate::authenticate::jwks::KeyStore;
use crate::config::{AgentConfig, ConfigError};
use crate::forward::{ForwardError, Forwarder};
use crate::metrics::Metrics;
use crate::ops::{Ops, Readiness};
use crate::proxy::Proxy;
use crate::tls::TlsError;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::registry::Registry;
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
    /// The upstream client could not be built.
    #[error("setting up the upstream client")]
    Forward(#[from] ForwardError),
    /// The ops listener could not bind.
    #[error("binding the ops listener on {addr}")]
    OpsBind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The agent's parts, built from its configuration.
pub struct Agent {
    /// The request path.
    pub proxy: Proxy,
    /// The issuer's key store, shared with the periodic refresh and `/readyz`.
    pub keys: Arc<KeyStore>,
    /// Metric handles.
    pub metrics: Metrics,
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// A separate upstream client for readiness probes (its own pool, so a probe never
    /// queues behind user traffic).
    pub probe: Forwarder,
}

/// Builds the agent's parts from `config`.
pub fn build(config: &AgentConfig) -> Result<Agent, ServerError> {
    config.validate()?;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let oidc_tls = crate::tls::client_config(config.oidc.ca_file.as_deref())?;
    let keys = Arc::new(
        KeyStore::remote(
            &config.oidc.issuer_url,
            oidc_tls,
            config.oidc.jwks_min_refresh,
        )
        .with_metrics(metrics.clone()),
    );
    let authenticator = Authenticator::with_shared_keys(config.oidc.clone(), keys.clone())
        .with_metrics(metrics.clone());
    let forwarder = Forwarder::new(&config.upstream)?;
    let probe = Forwarder::new(&config.upstream)?;
    Ok(Agent {
        proxy: Proxy::new(authenticator, forwarder),
        keys,
        metrics,
        registry,
        probe,
    })
}

/// Serves kubectl on `listener` until `shutdown` resolves, then drains in-flight
/// requests for up to `config.drain_timeout`. Also runs the ops listener and the periodic
/// refresh of the issuer's keys.
pub async fn run(
    listener: TcpListener,
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let agent = build(&config)?;
    let tls = crate::tls::server_config(&config.tls_cert_file, &config.tls_key_file)?;
    tracing::info!(upstream = %config.upstream.url, issuer = %config.oidc.issuer_url, "gatehouse agent configured");
    let ops_listener = match config.ops_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::OpsBind { addr, source })?,
        ),
        None => None,
    };
    tokio::spawn(refresh_keys_periodically(
        agent.keys.clone(),
        config.jwks_refresh_interval,
    ));
    if let Some(ops_listener) = ops_listener {
        let ops = Arc::new(Ops {
            registry: agent.registry,
            readiness: Readiness::new(agent.keys.clone(), agent.probe, config.readiness_cache),
        });
        // The ops listener stays up while requests drain, so probes see the agent until it exits.
        tokio::spawn(crate::ops::serve(ops_listener, ops, std::future::pending()));
    }
    serve_with(
        listener,
        Arc::new(agent.proxy),
        Arc::new(tls),
        &config,
        agent.metrics,
        shutdown,
    )
    .await;
    Ok(())
}

/// Fetches the keys at start-up (so `/readyz` and the first request don't wait) and then
/// every `interval`; failures keep the last good keys and are logged by the store.
async fn refresh_keys_periodically(keys: Arc<KeyStore>, interval: Duration) {
    loop {
        if let Ok(count) = keys.refresh().await {
            tracing::debug!(keys = count, "refreshed OIDC signing keys");
        }
        tokio::time::sleep(interval).await;
    }
}

/// [`serve_with`] with metrics that are not exported (tests).
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Arc<rustls::ServerConfig>,
    config: &AgentConfig,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, proxy, tls, config, Metrics::default(), shutdown).await;
}

/// The accept loop behind [`run`], with the request path and TLS settings supplied
/// (tests build a [`Proxy`] with fixed keys). Uses the timeouts and limits of `config`.
pub async fn serve_with(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Arc<rustls::ServerConfig>,
    config: &AgentConfig,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) {
    let tls = tokio_rustls::TlsAcceptor::from(tls);
    let limits = &config.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper refuses buffers under 8 KiB; the head must fit this buffer or gets 431.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_header_list_size(limits.h2_max_header_list_size)
        .max_concurrent_streams(limits.h2_max_concurrent_streams);
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
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
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            // Closing at once is cheaper than a TLS handshake to say no.
            metrics.connection_refused();
            tracing::warn!(peer = %peer, max = limits.max_connections, "connection limit reached; closing new connection");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (tls, proxy, builder) = (tls.clone(), proxy.clone(), builder.clone());
        let watcher = graceful.watcher();
        let handshake_timeout = config.tls_handshake_timeout;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _open = metrics.connection_opened();
            let stream = match tokio::time::timeout(handshake_timeout, tls.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    metrics.tls_handshake_failure();
                    tracing::debug!(peer = %peer, error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    metrics.tls_handshake_failure();
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
    let deadline = tokio::time::Instant::now() + config.drain_timeout;
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep_until(deadline) => {
            tracing::warn!("drain deadline reached; closing remaining connections");
        }
    }
    // Upgraded sessions (exec, attach, port-forward) live outside the connection watcher.
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    proxy.sessions().drain(left).await;
}
