//! Where the agent's upstream comes from and how it authenticates there.
//!
//! Exactly one source ([`crate::config::UpstreamSource`]): explicit flags (URL, CA file,
//! token file; the default, with the in-cluster paths), in-cluster discovery
//! (`KUBERNETES_SERVICE_HOST/PORT` plus the mounted service-account token and CA), or a
//! kubeconfig context (when the agent runs outside the cluster). Each resolves to an
//! [`Upstream`]: the API server URL, a rustls client config (CA, optional client
//! certificate) and an [`credential::UpstreamCredential`] asked for a header per request.
//!
//! - [`credential`]: the trait and the simple credentials; [`token_file`]: a rotating
//!   token file; [`client_cert`]: mTLS material; [`exec`]: exec credential plugins;
//!   [`kubeconfig`]: kubeconfig parsing; [`in_cluster`]: the pod environment;
//!   [`eks`]: an EKS token from an IAM role (`--upstream-credential eks`), cached by
//!   [`token_cache`].

pub mod client_cert;
pub mod credential;
pub mod eks;
pub mod exec;
pub mod in_cluster;
pub mod kubeconfig;
pub mod token_cache;
pub mod token_file;

use crate::config::{UpstreamConfig, UpstreamSource};
use client_cert::Pem;
use credential::{CredentialError, NoCredential, UpstreamCredential};
use std::path::PathBuf;
use std::sync::Arc;

/// Errors resolving the upstream at start-up (each names the file or setting at fault).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A file could not be read.
    #[error("reading {what} {path}")]
    ReadFile {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// PEM or base64 data is unusable.
    #[error("{what} in {origin}: {reason}")]
    BadPem {
        /// What it should hold.
        what: &'static str,
        /// File or kubeconfig field.
        origin: String,
        /// Why.
        reason: String,
    },
    /// The client certificate and key do not form a usable pair.
    #[error("client certificate {cert} with key {key}: {reason}")]
    ClientCertificate {
        /// Certificate origin.
        cert: String,
        /// Key origin.
        key: String,
        /// Why.
        reason: String,
    },
    /// The CA holds no certificate rustls accepts.
    #[error("{0} holds no usable CA certificate")]
    NoRoots(String),
    /// The kubeconfig is unusable for the agent.
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// `--upstream-credential eks` settings are unusable.
    #[error("--upstream-credential eks: {0}")]
    Eks(String),
    /// `--upstream-in-cluster` outside a pod.
    #[error("--upstream-in-cluster: {0}")]
    InCluster(String),
    /// The API server URL is unusable.
    #[error("upstream URL {url:?} from {from}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Where it came from.
        from: String,
        /// Why.
        reason: String,
    },
    /// A credential is malformed.
    #[error("upstream credential")]
    Credential(#[from] CredentialError),
    /// rustls refused the settings.
    #[error("building the upstream TLS configuration")]
    Rustls(#[from] rustls::Error),
}

/// A resolved upstream.
pub struct Upstream {
    /// Base URL of the API server.
    pub url: String,
    /// TLS settings: the CA and, if the credential has one, the client certificate.
    pub tls: rustls::ClientConfig,
    /// The agent's own credential.
    pub credential: Arc<dyn UpstreamCredential>,
    /// Which source it came from, for the start-up log.
    pub source: String,
    /// Name the server certificate must carry when it differs from the URL's host
    /// (kubeconfig `tls-server-name`).
    pub server_name: Option<rustls_pki_types::ServerName<'static>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("url", &self.url)
            .field("source", &self.source)
            .field("credential", &self.credential.describe())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Resolves `config`'s source; every file is read (and checked) now, so a broken
    /// setting stops the start instead of failing the first request.
    pub fn resolve(config: &UpstreamConfig) -> Result<Self, UpstreamError> {
        let mut server_name = None;
        let (url, ca, credential, source): (_, _, Arc<dyn UpstreamCredential>, _) =
            match &config.source {
                UpstreamSource::Flags => (
                    config.url.clone(),
                    config.ca_file.clone().map(Pem::File),
                    match &config.token_file {
                        Some(path) => Arc::new(
                            token_file::TokenFile::new(path)
                                .with_recheck_interval(token_file::REQUEST_PATH_RECHECK),
                        ),
                        None => Arc::new(NoCredential),
                    },
                    "--upstream-url".to_string(),
                ),
                UpstreamSource::InCluster => {
                    let url = in_cluster::url_from_env(|name| std::env::var(name).ok())?;
                    (
                        url,
                        Some(Pem::File(PathBuf::from(crate::config::IN_CLUSTER_CA_FILE))),
                        Arc::new(
                            token_file::TokenFile::new(crate::config::IN_CLUSTER_TOKEN_FILE)
                                .with_recheck_interval(token_file::REQUEST_PATH_RECHECK),
                        ),
                        "in-cluster service account".to_string(),
                    )
                }
                UpstreamSource::Kubeconfig { path, context } => {
                    let resolved = kubeconfig::load(path, context.as_deref())?;
                    let source = format!(
                        "kubeconfig {} context {:?}",
                        path.display(),
                        resolved.context
                    );
                    server_name = resolved.tls_server_name;
                    (resolved.url, resolved.ca, resolved.credential, source)
                }
            };
        // --- EKS upstream credential: replaces the source's token, keeps its URL and CA ---
        let credential: Arc<dyn UpstreamCredential> = match &config.eks {
            None => credential,
            Some(_) if matches!(config.source, UpstreamSource::Kubeconfig { .. }) => {
                return Err(UpstreamError::Eks(
                    "not with --upstream-kubeconfig (its user may run `aws eks get-token` instead)"
                        .into(),
                ));
            }
            Some(eks) => eks::EksCredential::shared(eks, |name| std::env::var(name).ok())
                .map_err(UpstreamError::Eks)?,
        };
        check_url(&url, &source)?;
        let tls = client_tls(ca.as_ref(), credential.as_ref())?;
        Ok(Self {
            url,
            tls,
            credential,
            source,
            server_name,
        })
    }

    /// An HTTPS connector builder with these TLS settings (and the server-name override).
    pub fn https_builder(
        &self,
    ) -> hyper_rustls::HttpsConnectorBuilder<hyper_rustls::builderstates::WantsProtocols1> {
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(self.tls.clone())
            .https_or_http();
        match &self.server_name {
            Some(name) => builder.with_server_name_resolver(
                hyper_rustls::FixedServerNameResolver::new(name.clone()),
            ),
            None => builder,
        }
    }
}

fn check_url(url: &str, from: &str) -> Result<(), UpstreamError> {
    let err = |reason: &str| UpstreamError::Url {
        url: url.to_string(),
        from: from.to_string(),
        reason: reason.to_string(),
    };
    let parsed = url::Url::parse(url).map_err(|e| err(&e.to_string()))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(err(
            "scheme must be https (or http for a local test server)",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(err("must not have a query or fragment"));
    }
    Ok(())
}

/// A rustls client config trusting `ca` (the Mozilla roots when `None`), presenting the
/// credential's client certificate if it has one.
pub fn client_tls(
    ca: Option<&Pem>,
    credential: &dyn UpstreamCredential,
) -> Result<rustls::ClientConfig, UpstreamError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(pem) => {
            let (added, _ignored) =
                roots.add_parsable_certificates(pem.certificates("CA certificates")?);
            if added == 0 {
                return Err(UpstreamError::NoRoots(pem.origin()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    Ok(match credential.client_identity() {
        Some(identity) => match &identity.reload {
            Some(reloading) => builder.with_client_cert_resolver(reloading.clone()),
            None => {
                builder.with_client_auth_cert(identity.certs.clone(), identity.key.clone_key())?
            }
        },
        None => builder.with_no_client_auth(),
    })
}
