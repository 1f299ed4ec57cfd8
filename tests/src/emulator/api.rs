//! The emulator's public handle: start, identities, request log, shutdown.

use super::authn::{self, TokenTable, UserInfo};
use super::context::Shared;
use super::request_log::{RequestLog, RequestRecord};
use super::runtime::{ContainerRuntime, RuntimeConfig};
use super::seed::{self, Seed};
use super::server;
use super::store::Store;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How to start an emulator.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Directory for `ca.crt`, `admin-token`, `agent-token` and `url`.
    pub dir: PathBuf,
    /// Listen address; must be loopback (`127.0.0.1:0` picks a port).
    pub listen: SocketAddr,
    /// Initial contents.
    pub seed: Seed,
    /// Container runtime settings.
    pub runtime: RuntimeConfig,
}

/// A running emulator.
#[derive(Debug)]
pub struct Emulator {
    shared: Arc<Shared>,
    url: String,
    dir: PathBuf,
    admin_token: String,
    agent_token: String,
    // --- client certificates ---
    ca: Arc<crate::pki::Ca>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Emulator {
    /// Generates certificates and tokens, seeds the store and starts serving.
    pub async fn start(config: EmulatorConfig) -> anyhow::Result<Emulator> {
        anyhow::ensure!(
            config.listen.ip().is_loopback(),
            "the emulator listens on loopback only, not {}",
            config.listen
        );
        std::fs::create_dir_all(&config.dir)
            .with_context(|| format!("creating {}", config.dir.display()))?;
        let ca = crate::pki::Ca::new("gatehouse-emulator-ca")?;
        ca.write_cert(&config.dir.join("ca.crt"))?;
        let leaf = ca.issue_server(
            "kube-apiserver",
            &["kubernetes", "kubernetes.default", "kubernetes.default.svc"],
        )?;
        // Client certificates are optional and must be signed by the same CA.
        let tls = leaf.server_config_with_client_ca(&[b"h2", b"http/1.1"], &ca.cert_pem())?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let url = format!("https://{addr}");
        let runtime = Arc::new(
            ContainerRuntime::new(config.runtime.clone())
                .context("starting the container runtime")?,
        );
        let shared = Arc::new(Shared {
            store: Store::new(),
            tokens: TokenTable::default(),
            log: RequestLog::default(),
            runtime,
            server_address: addr.to_string(),
            eks: std::sync::RwLock::new(None),
            gzip_min_bytes: std::sync::atomic::AtomicUsize::new(usize::MAX),
        });
        let admin_token = authn::random_token();
        let agent_token = authn::random_token();
        shared.tokens.add(&admin_token, authn::admin_user());
        shared.tokens.add(&agent_token, authn::agent_user());
        seed::load(&shared, config.seed)
            .await
            .map_err(|e| anyhow::anyhow!("seeding: {e}"))?;
        for (file, contents) in [
            ("admin-token", &admin_token),
            ("agent-token", &agent_token),
            ("url", &url),
        ] {
            let path = config.dir.join(file);
            std::fs::write(&path, contents)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(server::run(listener, tls, shared.clone(), stop_rx));
        tracing::info!(%url, dir = %config.dir.display(), "kube emulator listening");
        Ok(Emulator {
            shared,
            url,
            dir: config.dir,
            admin_token,
            agent_token,
            ca: Arc::new(ca),
            stop,
            task,
        })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The CA certificate (PEM) that signed the server certificate.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Token of `emulator-admin` (system:masters).
    pub fn admin_token(&self) -> String {
        self.admin_token.clone()
    }

    /// Token of `system:serviceaccount:gatehouse:gatehouse-agent`.
    pub fn agent_token(&self) -> String {
        self.agent_token.clone()
    }

    /// A client certificate (and key) signed by the emulator's CA that authenticates as
    /// `user` in `groups` (CN and O, as on a real API server). rcgen keeps one value per
    /// subject attribute, so pass at most one group.
    pub fn issue_client_cert(
        &self,
        user: &str,
        groups: &[&str],
    ) -> anyhow::Result<crate::pki::CertKeyPem> {
        Ok(self.ca.issue_client(user, groups)?)
    }

    /// Adds a bearer token for `user`.
    pub fn add_token(&self, token: &str, user: UserInfo) {
        self.shared.tokens.add(token, user);
    }

    // --- EKS token authentication ---
    /// Accepts EKS (`k8s-aws-v1.`) bearer tokens from now on, verified against STS and
    /// mapped as `config` says; returns the authenticator (its refusals are inspectable).
    pub fn enable_eks(
        &self,
        config: super::eks::EksAuthConfig,
    ) -> anyhow::Result<Arc<super::eks::EksAuthenticator>> {
        let authenticator = Arc::new(super::eks::EksAuthenticator::new(config)?);
        if let Ok(mut slot) = self.shared.eks.write() {
            *slot = Some(authenticator.clone());
        }
        Ok(authenticator)
    }

    // --- masking tests ---
    /// Gzips complete responses of at least `bytes` to clients that accept gzip, as the
    /// API server does for large ones (`usize::MAX`: never, the default).
    pub fn set_gzip_min_bytes(&self, bytes: usize) {
        self.shared
            .gzip_min_bytes
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Serves `pods/log` in frames of at most `bytes` (0: one frame per line).
    pub fn set_log_chunk_bytes(&self, bytes: usize) {
        self.shared.runtime.set_log_chunk_bytes(bytes);
    }

    /// Every request answered so far.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.shared.log.snapshot()
    }

    /// Stops the server and every pod process.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.shared.runtime.shutdown().await;
    }
}
