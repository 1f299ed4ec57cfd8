//! `gatehouse-collector` binary: parses arguments, binds, and runs the collector.

use anyhow::Context;
use clap::Parser;
use gatehouse_collector::config::CollectorConfig;
use gatehouse_collector::ingest::token_review::{TokenReviewConfig, TokenReviewer};
use gatehouse_collector::ingest::{self, IngestConfig, IngestState};
use gatehouse_collector::metrics::IngestMetrics;
use gatehouse_collector::policy::{PolicyMetrics, PolicyStore};
use gatehouse_collector::store::AuditStore;
use gatehouse_collector::store::clickhouse::{ClickHouseConfig, ClickHouseStore};
use gatehouse_collector::store::embedded::EmbeddedStore;
use gatehouse_collector::store::query::AuditQuery;
use gatehouse_collector::store::schema::SchemaSettings;
use gatehouse_collector::telemetry::{self, LogFormat};
use gatehouse_collector::{query_api, server, shutdown};
use gatehouse_common::oidc::jwks::KeyStore;
use gatehouse_common::oidc::{Authenticator, OidcConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Gatehouse collector: the central service Gatehouse agents report to.
///
/// Serves health checks (/healthz, /readyz) and Prometheus metrics (/metrics) over plain
/// HTTP on --listen (keep it on loopback or behind a TLS-terminating proxy), and, with
/// --ingest-listen, the agents' ingest endpoint (TLS, HTTP/2, POST /v1/ingest) that commits
/// audit events to ClickHouse (--clickhouse-url) or, without it, to an embedded SQLite
/// database under --store-dir (one collector only); with --api-listen, the security team's
/// audit query API (TLS, OIDC ID tokens, --query-groups only) over the same store. The
/// ClickHouse password comes from --clickhouse-password-file or the
/// GATEHOUSE_CLICKHOUSE_PASSWORD environment variable and is never logged.
#[derive(Debug, Parser)]
#[command(name = "gatehouse-collector", version, about, long_about)]
struct Args {
    /// Address to listen on (HTTP).
    #[arg(
        long,
        env = "GATEHOUSE_COLLECTOR_LISTEN",
        default_value = "127.0.0.1:9080"
    )]
    listen: SocketAddr,

    /// Seconds in-flight requests may finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 10)]
    drain_timeout_secs: u64,

    /// Log format.
    #[arg(long, value_enum, env = "GATEHOUSE_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    // --- ingest + ClickHouse store ---
    /// Address of the agent ingest listener (TLS, HTTP/2 only). Requires --tls-cert-file,
    /// --tls-key-file and --agent-ca-file (or --token-review-url); events go to
    /// --clickhouse-url if given, else to the embedded store in --store-dir.
    #[arg(long, env = "GATEHOUSE_COLLECTOR_INGEST_LISTEN")]
    ingest_listen: Option<SocketAddr>,

    /// PEM certificate chain the ingest listener presents.
    #[arg(long, requires = "ingest_listen")]
    tls_cert_file: Option<PathBuf>,

    /// PEM private key of --tls-cert-file.
    #[arg(long, requires = "ingest_listen")]
    tls_key_file: Option<PathBuf>,

    /// PEM CA that issues agent client certificates; the certificate's CN is the agent's
    /// node name and must match the `agent` of every batch it sends.
    #[arg(long, requires = "ingest_listen")]
    agent_ca_file: Option<PathBuf>,

    /// ClickHouse HTTP interface, e.g. http://127.0.0.1:8123. Without it the collector
    /// stores audit events in the embedded store (--store-dir).
    #[arg(long, env = "GATEHOUSE_CLICKHOUSE_URL")]
    clickhouse_url: Option<String>,

    /// Directory of the embedded audit store (SQLite file `audit.sqlite3`, created with
    /// mode 0700), used when --clickhouse-url is absent. One collector per directory:
    /// the embedded store is for single-node installs and the dev stack.
    #[arg(
        long,
        env = "GATEHOUSE_STORE_DIR",
        value_name = "DIR",
        default_value = DEFAULT_STORE_DIR,
        conflicts_with = "clickhouse_url"
    )]
    store_dir: PathBuf,

    /// ClickHouse database for the audit tables (created when missing).
    #[arg(
        long,
        env = "GATEHOUSE_CLICKHOUSE_DATABASE",
        default_value = "gatehouse"
    )]
    clickhouse_database: String,

    /// ClickHouse user (default: the server's `default` user).
    #[arg(long, env = "GATEHOUSE_CLICKHOUSE_USER")]
    clickhouse_user: Option<String>,

    /// File holding the ClickHouse password (first line). Without it the password is read
    /// from GATEHOUSE_CLICKHOUSE_PASSWORD, if set.
    #[arg(long)]
    clickhouse_password_file: Option<PathBuf>,

    /// Days audit rows are kept: a TTL on ClickHouse servers that support TTL (at most
    /// 25000: the TTL is a DateTime, which ends in 2106); the embedded store deletes older
    /// rows at start-up and every hour.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..=25_000))]
    retention_days: u32,

    /// Seconds one batch commit may take before it is answered `committed:false`.
    #[arg(long, default_value_t = 30)]
    store_timeout_secs: u64,

    /// Kubernetes API server that verifies agent service-account tokens with a TokenReview
    /// (for agents without a client certificate), e.g. https://kubernetes.default.svc.
    #[arg(long, requires_all = ["token_review_ca_file", "token_review_token_file"])]
    token_review_url: Option<String>,

    /// PEM CA of the API server's certificate.
    #[arg(long, requires = "token_review_url")]
    token_review_ca_file: Option<PathBuf>,

    /// File with the collector's own bearer token for the API server (needs `create` on
    /// tokenreviews, e.g. the system:auth-delegator role); re-read for every review.
    #[arg(long, requires = "token_review_url")]
    token_review_token_file: Option<PathBuf>,

    /// Service accounts (namespace:name) whose tokens identify agents; repeatable.
    #[arg(
        long = "agent-service-account",
        default_value = "gatehouse:gatehouse-agent"
    )]
    agent_service_accounts: Vec<String>,

    /// Batches of one ingest stream read ahead of the store (backpressure beyond that).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_in_flight: u64,

    // --- query API ---
    /// Address of the audit query API (TLS with --tls-cert-file/--tls-key-file, HTTP/1.1
    /// and h2; GET /v1/audit/requests, /v1/sessions, /v1/sessions/{id}). Callers present an
    /// OIDC ID token of --oidc-issuer-url and must be in one of --query-groups. Reads the
    /// store ingest writes (ClickHouse, or the embedded one).
    #[arg(
        long,
        env = "GATEHOUSE_COLLECTOR_API_LISTEN",
        requires = "oidc_issuer_url"
    )]
    api_listen: Option<SocketAddr>,

    /// OIDC issuer whose ID tokens authenticate query API callers (https; must equal the
    /// tokens' `iss` and serve /.well-known/openid-configuration).
    #[arg(long, env = "GATEHOUSE_OIDC_ISSUER_URL")]
    oidc_issuer_url: Option<String>,

    /// Expected `aud` of those ID tokens (the OAuth client id).
    #[arg(long, default_value = "gatehouse")]
    oidc_client_id: String,

    /// PEM CA of the issuer's TLS certificate (default: the Mozilla roots).
    #[arg(long)]
    oidc_ca_file: Option<PathBuf>,

    /// Claim naming the user (`email` requires `email_verified`).
    #[arg(long, default_value = "sub")]
    oidc_username_claim: String,

    /// Claim holding the user's groups (string or array of strings).
    #[arg(long, default_value = "groups")]
    oidc_groups_claim: String,

    /// Prepended to every username.
    #[arg(long, default_value = "")]
    oidc_username_prefix: String,

    /// Prepended to every group (the --query-groups are compared with the prefixed names).
    #[arg(long, default_value = "")]
    oidc_groups_prefix: String,

    /// Groups whose members may query the audit trail (comma-separated or repeated);
    /// everyone else gets 403.
    #[arg(long, value_delimiter = ',', default_value = "security")]
    query_groups: Vec<String>,

    // --- policy ---
    /// Policy file (YAML, `kind: Policy`) served to agents on the ingest listener
    /// (`GET /v1/policy`). Validated at start: a bad file stops the collector. Re-read on
    /// SIGHUP and when the file changes (checked every second); a bad update is refused,
    /// logged with its line number and counted in
    /// gatehouse_collector_policy_reload_failures_total, and the old policy stays active.
    #[arg(long, env = "GATEHOUSE_POLICY", value_name = "FILE")]
    policy: Option<PathBuf>,

    /// Groups whose members may replace the policy with `PUT /v1/policy` on the query API
    /// (--api-listen; comma-separated or repeated). Each attempt is an audit event, stored
    /// before the change is made; the new text is validated whole and written to --policy.
    /// Default: nobody.
    #[arg(long, value_delimiter = ',', requires = "policy")]
    policy_admin_groups: Vec<String>,
}

/// Where the embedded store lives unless --store-dir says otherwise.
const DEFAULT_STORE_DIR: &str = "/var/lib/gatehouse/audit";

/// How often the embedded store deletes rows past --retention-days.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

fn password(args: &Args) -> anyhow::Result<Option<String>> {
    if let Some(path) = &args.clickhouse_password_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --clickhouse-password-file {}", path.display()))?;
        return Ok(Some(text.lines().next().unwrap_or_default().to_string()));
    }
    Ok(std::env::var("GATEHOUSE_CLICKHOUSE_PASSWORD").ok())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    telemetry::init(args.log_format, "info");
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line with the cause chain; anyhow's Debug form would add a backtrace
            // whenever RUST_BACKTRACE is set.
            tracing::error!(error = format!("{err:#}"), "gatehouse collector stopped");
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The two faces of one opened store: ingest writes through one, the query API reads
/// through the other.
struct OpenedStore {
    writes: Arc<dyn AuditStore>,
    reads: Arc<dyn AuditQuery>,
}

/// The ClickHouse store when --clickhouse-url is set, else the embedded one.
async fn open_store(args: &Args) -> anyhow::Result<OpenedStore> {
    let timeout = Duration::from_secs(args.store_timeout_secs);
    let retention = Duration::from_secs(u64::from(args.retention_days) * 86_400);
    let Some(url) = &args.clickhouse_url else {
        // Unlike ClickHouse, a local file that cannot be opened will not fix itself:
        // refuse to start rather than accept batches that can never be committed.
        let dir = args.store_dir.clone();
        let (store, report) =
            tokio::task::spawn_blocking(move || EmbeddedStore::open(&dir, timeout))
                .await
                .context("opening the embedded store")?
                .context("embedded audit store (--store-dir)")?;
        tracing::info!(
            path = %report.path.display(),
            from_version = report.from_version,
            applied = ?report.applied,
            "audit store: embedded (SQLite)"
        );
        let store = Arc::new(store);
        tokio::spawn(store.clone().prune_periodically(retention, PRUNE_EVERY));
        return Ok(OpenedStore {
            writes: store.clone(),
            reads: store,
        });
    };
    let mut store_config = ClickHouseConfig::new(url.clone(), &args.clickhouse_database);
    store_config.user = args.clickhouse_user.clone();
    store_config.password = password(args)?;
    store_config.timeout = timeout;
    store_config.schema = SchemaSettings {
        retention_days: args.retention_days,
    };
    let store = Arc::new(ClickHouseStore::new(store_config));
    // Down at start-up is not fatal: the store connects on the first batch, and until
    // then batches are answered committed:false and stay in agent spools.
    match store.migrate().await {
        Ok(report) => tracing::info!(
            server_version = %report.server_version,
            applied = ?report.applied,
            store = "clickhouse",
            "audit store schema current"
        ),
        Err(err) => {
            tracing::warn!(error = %err, store = "clickhouse", "audit store not reachable yet")
        }
    }
    Ok(OpenedStore {
        writes: store.clone(),
        reads: store,
    })
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = CollectorConfig {
        listen: args.listen,
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
    };
    let mut registry = prometheus_client::registry::Registry::default();
    // --- policy ---
    // Loaded before anything listens: a collector with a bad policy must not start.
    let policy = match &args.policy {
        Some(path) => {
            let store = PolicyStore::load(path, PolicyMetrics::register(&mut registry))
                .context("--policy")?;
            tokio::spawn(store.clone().watch(Duration::from_secs(1)));
            Some(store)
        }
        None => None,
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown::signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    // One store for ingest and the query API, opened only when one of them runs.
    let mut store_ready = None;
    let store = if args.ingest_listen.is_some() || args.api_listen.is_some() {
        let store = open_store(&args).await?;
        let ready = Arc::new(AtomicBool::new(false));
        store_ready = Some(ready.clone());
        let probe = store.writes.clone();
        tokio::spawn(async move {
            // /readyz follows the store, so a load balancer can prefer a collector that
            // can commit (agents keep their spool either way).
            loop {
                ready.store(probe.health().await.is_ok(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        Some(store)
    } else {
        None
    };
    let ingest_task = match args.ingest_listen {
        None => None,
        Some(addr) => {
            let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_key_file) else {
                anyhow::bail!("--ingest-listen needs --tls-cert-file and --tls-key-file");
            };
            if args.agent_ca_file.is_none() && args.token_review_url.is_none() {
                anyhow::bail!(
                    "--ingest-listen needs --agent-ca-file (agent client certificates) and/or \
                     --token-review-url (agent service-account tokens)"
                );
            }
            let tls = ingest::tls::server_config(cert, key, args.agent_ca_file.as_deref())
                .context("ingest TLS settings")?;
            let token_reviewer = match (
                &args.token_review_url,
                &args.token_review_ca_file,
                &args.token_review_token_file,
            ) {
                (Some(url), Some(ca), Some(token)) => Some(
                    TokenReviewer::new(TokenReviewConfig {
                        api_server: url.clone(),
                        ca_file: ca.clone(),
                        token_file: token.clone(),
                        agent_service_accounts: args.agent_service_accounts.clone(),
                        timeout: Duration::from_secs(10),
                    })
                    .context("agent token review")?,
                ),
                _ => None,
            };
            let Some(store) = store.as_ref().map(|s| s.writes.clone()) else {
                anyhow::bail!("internal: the store was not opened for ingest");
            };
            let state = Arc::new(IngestState {
                store,
                metrics: IngestMetrics::register(&mut registry),
                config: IngestConfig {
                    max_in_flight: usize::try_from(args.max_in_flight).unwrap_or(4),
                    drain_timeout: config.drain_timeout,
                    ..IngestConfig::default()
                },
                token_reviewer,
                policy: policy.clone(),
            });
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding ingest {addr}"))?;
            Some(tokio::spawn(ingest::serve(
                listener,
                tls,
                state,
                stopped(stop_rx.clone()),
            )))
        }
    };

    let api_task = match args.api_listen {
        None => None,
        Some(addr) => {
            let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_key_file) else {
                anyhow::bail!("--api-listen needs --tls-cert-file and --tls-key-file");
            };
            let audit_writes = store.as_ref().map(|s| s.writes.clone());
            let Some(store) = store.as_ref().map(|s| s.reads.clone()) else {
                anyhow::bail!("internal: the store was not opened for the query API");
            };
            let Some(issuer) = &args.oidc_issuer_url else {
                anyhow::bail!("--api-listen needs --oidc-issuer-url");
            };
            if !issuer.starts_with("https://") {
                // Discovery over plain HTTP would let anyone on the path swap the keys.
                anyhow::bail!("--oidc-issuer-url must be https, got {issuer:?}");
            }
            let groups: Vec<String> = args
                .query_groups
                .iter()
                .map(|g| g.trim().to_string())
                .filter(|g| !g.is_empty())
                .collect();
            if groups.is_empty() {
                anyhow::bail!("--query-groups must name at least one group");
            }
            let oidc = OidcConfig {
                issuer_url: issuer.clone(),
                ca_file: args.oidc_ca_file.clone(),
                client_id: args.oidc_client_id.clone(),
                username_claim: args.oidc_username_claim.clone(),
                groups_claim: args.oidc_groups_claim.clone(),
                username_prefix: args.oidc_username_prefix.clone(),
                groups_prefix: args.oidc_groups_prefix.clone(),
                ..OidcConfig::default()
            };
            let issuer_tls =
                query_api::issuer_tls(oidc.ca_file.as_deref()).context("--oidc-ca-file")?;
            let keys = Arc::new(KeyStore::remote(
                &oidc.issuer_url,
                issuer_tls,
                oidc.jwks_min_refresh,
            ));
            tokio::spawn(keys.clone().refresh_every(oidc.jwks_refresh_interval));
            let tls = query_api::tls_config(cert, key).context("query API TLS settings")?;
            let state = Arc::new(query_api::ApiState {
                store,
                authenticator: Authenticator::with_shared_keys(oidc, keys),
                query_groups: groups,
                handshake_timeout: Duration::from_secs(10),
                drain_timeout: config.drain_timeout,
                policy_admin: match (&policy, audit_writes) {
                    (Some(policy), Some(audit)) => Some(query_api::policy_admin::PolicyAdmin {
                        policy: policy.clone(),
                        admin_groups: args
                            .policy_admin_groups
                            .iter()
                            .map(|g| g.trim().to_string())
                            .filter(|g| !g.is_empty())
                            .collect(),
                        audit,
                    }),
                    _ => None,
                },
            });
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding query API {addr}"))?;
            Some(tokio::spawn(query_api::serve(
                listener,
                tls,
                state,
                stopped(stop_rx.clone()),
            )))
        }
    };

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let mut state = server::State::new(registry);
    if let Some(flag) = store_ready {
        state = state.with_store_readiness(flag);
    }
    server::run_with_state(listener, config, Arc::new(state), stopped(stop_rx))
        .await
        .context("collector failed")?;
    if let Some(task) = api_task {
        task.await
            .context("query API task panicked")?
            .context("query API failed")?;
    }
    if let Some(task) = ingest_task {
        task.await
            .context("ingest task panicked")?
            .context("ingest failed")?;
    }
    Ok(())
}
