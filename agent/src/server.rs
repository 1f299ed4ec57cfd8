//! The TLS listener: rustls with ALPN h2 + http/1.1 (hot-reloaded certificate, optional
//! client certificates), hyper's auto server with upgrades and the limits of
//! [`crate::config::ListenerLimits`], and graceful shutdown with a drain deadline.
//! [`run`] is what `main` calls.

use crate::authenticate::client_cert::identity_from_cert;
use crate::authenticate::jwks::KeyStore;
use crate::authenticate::{Authenticator, ClientCertIdentity};
use crate::config::{AgentConfig, ConfigError};
use crate::forward::{ForwardError, Forwarder};
use crate::metrics::Metrics;
use crate::ops::{Ops, UpstreamProbe};
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

// --- first bytes (H): bound the wait for the first request or h2 preface ---
mod first_bytes;

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
    // --- upstream sources ---
    /// The upstream (kubeconfig, in-cluster, CA, credential) is unusable.
    #[error("resolving the upstream API server")]
    Upstream(#[from] crate::upstream::UpstreamError),
    // --- spool + shipper ---
    /// The audit spool could not be opened.
    #[error("opening the audit spool")]
    Spool(#[from] crate::spool::SpoolError),
    /// The shipper's settings are unusable.
    #[error("setting up shipping to the collector")]
    Ship(#[from] crate::ship::ShipError),
    // --- masking ---
    /// The masking profiles are unusable.
    #[error("loading masking profiles")]
    Mask(#[from] crate::forward::mask::MaskSetupError),
    // --- policy ---
    /// The policy source is unusable (e.g. an invalid --policy-file).
    #[error("loading the policy")]
    Policy(#[from] crate::policy::PolicySourceError),
}

/// Builds the request path from `config`.
pub fn build_proxy(config: &AgentConfig) -> Result<Proxy, ServerError> {
    Ok(build_parts(config, Arc::new(Metrics::new()))?.0)
}

/// The request path plus the key store it shares with the JWKS refresh and `/readyz`.
fn build_parts(
    config: &AgentConfig,
    metrics: Arc<Metrics>,
) -> Result<(Proxy, Arc<KeyStore>), ServerError> {
    config.validate()?;
    let oidc_tls = crate::tls::client_config(config.oidc.ca_file.as_deref())?;
    let keys = Arc::new(KeyStore::remote(
        &config.oidc.issuer_url,
        oidc_tls,
        config.oidc.jwks_min_refresh,
    ));
    let authenticator = Authenticator::with_shared_keys(config.oidc.clone(), keys.clone())
        .with_failure_hook({
            let metrics = metrics.clone();
            Arc::new(move |reason| metrics.auth_failure(reason))
        });
    let metrics_for_spool = metrics.clone();
    let forwarder = Forwarder::new(&config.upstream)?;
    // Audit: always the tracing target, plus the JSON-lines file when asked for.
    // Metrics are fed by the same events, so the two can never disagree.
    let mut sink = crate::audit::sink::FanOut::new()
        .with(Arc::new(crate::audit::sink::TracingSink))
        .with(metrics);
    // Recordings are bulk data: they go to one durable destination, never to the log: the
    // spool (whose queued recording bytes are bounded, see `record::recorder`), or the
    // audit file when there is no spool.
    let mut recording_file: Option<Arc<dyn crate::audit::sink::AuditSink>> = None;
    if let Some(arg) = &config.audit_log {
        let target = crate::audit::jsonl::Target::parse(arg);
        let (jsonl, _writer) = crate::audit::jsonl::JsonLinesSink::start(target)
            .map_err(|e| ServerError::AuditLog(arg.clone(), e))?;
        let jsonl = Arc::new(jsonl);
        sink = sink.with(jsonl.clone());
        recording_file = Some(jsonl);
    }
    // Every event is spooled before it is shipped.
    let spool = match &config.spool {
        Some(spool_config) => Some(crate::spool::Spool::open(
            spool_config.clone(),
            metrics_for_spool.spool().clone(),
        )?),
        None => None,
    };
    if let Some(spool) = &spool {
        sink = sink.with(spool.clone());
    }
    let recording_sink: Arc<dyn crate::audit::sink::AuditSink> = match (&spool, recording_file) {
        (Some(spool), _) => spool.clone(),
        (None, Some(file)) => file,
        (None, None) => Arc::new(crate::audit::sink::FanOut::new()),
    };
    let sink: Arc<dyn crate::audit::sink::AuditSink> = Arc::new(sink);
    let mut proxy = Proxy::new(authenticator, forwarder, sink.clone(), config.site.clone())
        .with_session_limits(config.session_limits);
    // --- session recording (issue 6): chunks go where every audit event goes ---
    if config.session_recording {
        if config.audit_log.is_none() && spool.is_none() {
            tracing::warn!(
                "session recordings are kept nowhere: give --spool-dir (shipped to the \
                 collector) or --audit-log"
            );
        }
        proxy = proxy.with_recording(crate::record::Recording::new(recording_sink, spool.clone()));
    }
    if let Some(spool) = spool {
        proxy = proxy.with_spool(spool);
    }
    proxy = proxy.with_masking(Arc::new(crate::forward::mask::Masking::load(&config.mask)?));
    // --- policy ---
    Ok((
        proxy.with_policy(crate::policy::ActivePolicy::empty()),
        keys,
    ))
}

/// Serves kubectl on `listener` until `shutdown` resolves, then drains in-flight
/// requests for up to `config.drain_timeout`. Also runs the periodic JWKS refresh and the
/// operations listener (`config.ops_listen`).
pub async fn run(
    listener: TcpListener,
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let metrics = Arc::new(Metrics::new());
    let (proxy, keys) = build_parts(&config, metrics.clone())?;
    let proxy = Arc::new(proxy);
    let tls = crate::tls::listener_config(
        &config.tls_cert_file,
        &config.tls_key_file,
        config.client_ca_file.as_deref(),
    )?;
    let hook_metrics = metrics.clone();
    keys.set_refresh_hook(Box::new(move |ok| hook_metrics.jwks_refresh(ok)))
        .await;
    let refresher = tokio::spawn(
        keys.clone()
            .refresh_every(config.oidc.jwks_refresh_interval),
    );
    // --- spool + shipper ---
    let stop_shipping = tokio_util::sync::CancellationToken::new();
    let shipper = match (proxy.spool(), &config.ship) {
        (Some(spool), Some(ship)) => Some(
            crate::ship::Shipper::new(spool.clone(), ship.clone(), metrics.ship().clone())?
                .spawn(stop_shipping.clone()),
        ),
        _ => None,
    };
    let spool = proxy.spool().cloned();
    // --- policy ---
    // A bad --policy-file stops the start; the collector source runs in the background.
    let policy_task = crate::policy::start(&config.policy, proxy.policy())?;
    let mut ready_checks: Vec<crate::ops::ReadyCheck> = proxy
        .spool()
        .map(|spool| crate::spool::Spool::ready_check(spool.clone()))
        .into_iter()
        .collect();
    ready_checks.push(proxy.policy().ready_check());
    let ops = match config.ops_listen {
        Some(addr) => Some(start_ops(addr, &config, metrics.clone(), keys, ready_checks).await?),
        None => None,
    };
    tracing::info!(issuer = %config.oidc.issuer_url, "gatehouse agent configured");
    serve_with_metrics(
        listener,
        proxy,
        Arc::new(tls),
        &config,
        Some(metrics),
        shutdown,
    )
    .await;
    refresher.abort();
    if let Some(task) = policy_task {
        task.abort();
    }
    if let Some(ops) = ops {
        ops.abort();
    }
    // Stop shipping, then make every queued event durable.
    stop_shipping.cancel();
    if let Some(shipper) = shipper {
        let _ = shipper.await;
    }
    if let Some(spool) = spool {
        let _ = tokio::task::spawn_blocking(move || spool.close()).await;
    }
    Ok(())
}

/// Binds and spawns the operations listener. A taken port is logged, not fatal: kubectl
/// traffic matters more, and a failing readiness probe makes the problem visible anyway.
async fn start_ops(
    addr: std::net::SocketAddr,
    config: &AgentConfig,
    metrics: Arc<Metrics>,
    keys: Arc<KeyStore>,
    extra: Vec<crate::ops::ReadyCheck>,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    let upstream = UpstreamProbe::new(&config.upstream)?;
    let ops = Arc::new(Ops {
        metrics,
        upstream,
        keys,
        extra,
    });
    Ok(tokio::spawn(async move {
        match TcpListener::bind(addr).await {
            Ok(listener) => crate::ops::serve(listener, ops, std::future::pending()).await,
            Err(err) => {
                tracing::error!(listen = %addr, error = %err, "cannot bind the operations listener");
            }
        }
    }))
}

/// The accept loop behind [`run`], with the request path and TLS settings supplied
/// (tests build a [`Proxy`] with fixed keys). Uses the timeouts and limits of `config`.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Arc<rustls::ServerConfig>,
    config: &AgentConfig,
    shutdown: impl Future<Output = ()>,
) {
    serve_with_metrics(listener, proxy, tls, config, None, shutdown).await;
}

/// [`serve`], counting handshake failures and open connections in `metrics`.
pub async fn serve_with_metrics(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Arc<rustls::ServerConfig>,
    config: &AgentConfig,
    metrics: Option<Arc<Metrics>>,
    shutdown: impl Future<Output = ()>,
) {
    let tls = tokio_rustls::TlsAcceptor::from(tls);
    let limits = &config.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper refuses buffers under 8 KiB; a head over the limit is answered with 431.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.h2_max_header_list_size)
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .keep_alive_interval(Some(limits.keep_alive_interval))
        .keep_alive_timeout(limits.keep_alive_interval);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
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
        // Over the connection cap: close at once rather than queue (fail fast, bounded memory).
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(peer = %peer, max = limits.max_connections, "connection limit reached; refusing connection");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (tls, proxy, builder) = (tls.clone(), proxy.clone(), builder.clone());
        let watcher = graceful.watcher();
        let handshake_timeout = config.tls_handshake_timeout;
        let first_bytes_timeout = limits.header_read_timeout;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _open = metrics.as_ref().map(|m| m.connection());
            let failed = || {
                if let Some(m) = &metrics {
                    m.tls_handshake_failed();
                }
            };
            let stream = match tokio::time::timeout(handshake_timeout, tls.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    tracing::debug!(peer = %peer, error = %err, "TLS handshake failed");
                    failed();
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %peer, "TLS handshake timed out");
                    failed();
                    return;
                }
            };
            let cert_identity = client_cert_identity(&stream, peer);
            let mut stream = stream;
            let stream =
                match first_bytes::read_version_prefix(&mut stream, first_bytes_timeout).await {
                    Ok(prefix) => first_bytes::Prefixed::new(prefix, stream),
                    Err(err) => {
                        tracing::debug!(peer = %peer, error = %err, "dropping connection");
                        return;
                    }
                };
            let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                let proxy = proxy.clone();
                if let Some(identity) = &cert_identity {
                    req.extensions_mut().insert(identity.clone());
                }
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

/// The identity of the client certificate rustls verified on this connection, if any.
/// A verified certificate without a usable subject is logged and ignored (the request then
/// needs a bearer token), never a way in.
fn client_cert_identity(
    stream: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    peer: std::net::SocketAddr,
) -> Option<ClientCertIdentity> {
    let leaf = stream.get_ref().1.peer_certificates()?.first()?;
    match identity_from_cert(leaf) {
        Ok(identity) => Some(ClientCertIdentity(Arc::new(identity))),
        Err(err) => {
            tracing::warn!(peer = %peer, error = %err, "ignoring client certificate");
            None
        }
    }
}
