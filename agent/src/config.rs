//! Typed agent settings with defaults, and their validation in one place.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Path of the service-account token a pod gets mounted (`serviceaccount` upstream mode).
pub const IN_CLUSTER_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Path of the cluster CA a pod gets mounted.
pub const IN_CLUSTER_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// Errors found while validating a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A URL did not parse or has the wrong scheme.
    #[error("invalid {what} {value:?}: {reason}")]
    Url {
        /// Which setting.
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A required setting is empty.
    #[error("{0} must be set")]
    Missing(&'static str),
}

/// Everything the agent needs to run.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Address the TLS listener binds (loopback by default; a DaemonSet uses the node IP).
    pub listen: SocketAddr,
    /// Server certificate chain (PEM) presented to kubectl.
    pub tls_cert_file: PathBuf,
    /// Private key (PEM, PKCS#8, SEC1 or PKCS#1) for `tls_cert_file`.
    pub tls_key_file: PathBuf,
    /// Time a client gets to finish the TLS handshake before the connection is dropped.
    pub tls_handshake_timeout: Duration,
    /// How long in-flight requests may run after SIGINT/SIGTERM before the agent exits anyway.
    pub drain_timeout: Duration,
    /// Where requests go, and with which credential.
    pub upstream: UpstreamConfig,
    /// How bearer tokens are verified.
    pub oidc: OidcConfig,
    // --- listener: mTLS and limits ---
    /// CA bundle (PEM) for optional client certificates; `None` = no client certificates.
    pub client_ca_file: Option<PathBuf>,
    /// Resource limits of the kubectl listener.
    pub limits: ListenerLimits,
    // --- operations endpoints ---
    /// Plain-HTTP listener for `/healthz`, `/readyz`, `/metrics`; `None` = off.
    pub ops_listen: Option<SocketAddr>,
    // --- audit ---
    /// Cluster and node stamped on every audit event.
    pub site: crate::audit::event::Site,
    /// `--audit-log`: JSON-lines file, `-` for stdout, `None` for the tracing target only.
    pub audit_log: Option<String>,
    // --- spool + shipper ---
    /// `--spool-dir` and friends: the durable audit spool; `None` = no spool.
    pub spool: Option<crate::spool::SpoolConfig>,
    /// `--collector-url` and friends: ship the spool to the collector; `None` = keep local.
    pub ship: Option<crate::ship::ShipConfig>,
    // --- masking ---
    /// Masking profiles and limits.
    pub mask: crate::forward::mask::MaskConfig,
    // --- policy ---
    /// `--policy-file` / `--policy-url` / `--policy-cache`: where the policy comes from.
    /// Without a source every request is refused (503) until one is configured.
    pub policy: crate::policy::PolicyConfig,
    // --- session recording and limits (issue 6) ---
    /// `--session-recording`: record exec/attach sessions and port-forward metadata.
    pub session_recording: bool,
    /// `--session-idle-timeout`, `--session-max-duration`.
    pub session_limits: crate::forward::session::SessionLimits,
}

/// Limits of the kubectl listener, so that one client cannot exhaust the agent.
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    /// Time a client gets to send a complete HTTP/1.1 request head (slowloris).
    pub header_read_timeout: Duration,
    /// HTTP/1.1 read buffer size, which bounds the request head (bytes).
    pub max_header_bytes: usize,
    /// Most headers in one HTTP/1.1 request.
    pub max_headers: usize,
    /// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE` (bytes).
    pub h2_max_header_list_size: u32,
    /// HTTP/2 concurrent streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// Interval of HTTP/2 keep-alive pings; a peer that does not answer is dropped.
    pub keep_alive_interval: Duration,
    /// Most open client connections; further ones are closed at once.
    pub max_connections: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            // Above the 16 KiB token limit: an oversized token gets a 401 Status, not a 431.
            max_header_bytes: 256 * 1024,
            max_headers: 100,
            h2_max_header_list_size: 256 * 1024,
            h2_max_concurrent_streams: 250,
            keep_alive_interval: Duration::from_secs(30),
            max_connections: 4096,
        }
    }
}

/// The Kubernetes API server the agent forwards to.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Base URL of the API server, e.g. `https://kubernetes.default.svc`.
    pub url: String,
    /// CA bundle (PEM) that signs the API server's certificate.
    pub ca_file: Option<PathBuf>,
    /// File holding the agent's own bearer token; re-read whenever it changes (rotation).
    pub token_file: Option<PathBuf>,
    /// Limit for establishing a TCP + TLS connection to the API server.
    pub connect_timeout: Duration,
    // --- upstream sources ---
    /// Where URL, CA and credential come from; `url`, `ca_file` and `token_file` apply to
    /// [`UpstreamSource::Flags`] only.
    pub source: UpstreamSource,
    // --- EKS upstream credential ---
    /// `--upstream-credential eks`: the agent's credential is an EKS token presigned with
    /// an IAM role's credentials instead of `token_file` (URL and CA still from the source).
    pub eks: Option<EksConfig>,
}

/// How the agent obtains its EKS token (see [`crate::upstream::eks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EksConfig {
    /// The cluster name the token is bound to (signed `x-k8s-aws-id` header).
    pub cluster_name: String,
    /// AWS region of STS; `None`: `AWS_REGION` / `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    /// STS endpoint for `AssumeRole` and the presigned URL; `None`: the regional endpoint.
    pub sts_endpoint: Option<String>,
    /// Role to assume with the base credentials; `None`: use the base credentials as they are.
    pub assume_role_arn: Option<String>,
    /// `RoleSessionName` of the `AssumeRole` call (shows in CloudTrail and in the ARN).
    pub role_session_name: String,
    /// `ExternalId` of the `AssumeRole` call, if the role's trust policy requires one.
    pub external_id: Option<String>,
}

/// Where the upstream settings come from (exactly one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum UpstreamSource {
    /// `url`, `ca_file` and `token_file` as given (defaults: the in-cluster paths).
    #[default]
    Flags,
    /// `KUBERNETES_SERVICE_HOST`/`PORT` plus the mounted service-account token and CA.
    InCluster,
    /// One context of a kubeconfig file (its current-context when `None`).
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// The context to use.
        context: Option<String>,
    },
}

/// OpenID Connect settings, named after the API server's own `--oidc-*` flags (shared with
/// the collector's query API, so they live in `gatehouse_common::oidc`).
pub use gatehouse_common::oidc::OidcConfig;

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tls_cert_file: PathBuf::from("/etc/gatehouse/tls/tls.crt"),
            tls_key_file: PathBuf::from("/etc/gatehouse/tls/tls.key"),
            tls_handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(20),
            upstream: UpstreamConfig::default(),
            oidc: OidcConfig::default(),
            client_ca_file: None,
            limits: ListenerLimits::default(),
            ops_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
            site: crate::audit::event::Site::default(),
            audit_log: None,
            spool: None,
            ship: None,
            mask: crate::forward::mask::MaskConfig::default(),
            policy: crate::policy::PolicyConfig::new(),
            session_recording: true,
            session_limits: Default::default(),
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            url: "https://kubernetes.default.svc".into(),
            ca_file: Some(PathBuf::from(IN_CLUSTER_CA_FILE)),
            token_file: Some(PathBuf::from(IN_CLUSTER_TOKEN_FILE)),
            connect_timeout: Duration::from_secs(5),
            source: UpstreamSource::Flags,
            eks: None,
        }
    }
}

impl AgentConfig {
    /// Checks the settings that would otherwise only fail on the first request.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Other sources are checked when they are resolved (crate::upstream).
        if self.upstream.source == UpstreamSource::Flags {
            check_url("--upstream-url", &self.upstream.url, &["https", "http"])?;
        }
        if self.oidc.issuer_url.is_empty() {
            return Err(ConfigError::Missing("--oidc-issuer-url"));
        }
        // OIDC discovery over plain HTTP would let anyone on the path swap the keys.
        check_url("--oidc-issuer-url", &self.oidc.issuer_url, &["https"])?;
        if self.oidc.client_id.is_empty() {
            return Err(ConfigError::Missing("--oidc-client-id"));
        }
        if self.oidc.username_claim.is_empty() {
            return Err(ConfigError::Missing("--oidc-username-claim"));
        }
        // Events reach the collector only through the spool.
        if self.ship.is_some() && self.spool.is_none() {
            return Err(ConfigError::Missing(
                "--spool-dir (needed by --collector-url)",
            ));
        }
        Ok(())
    }
}

fn check_url(what: &'static str, value: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let err = |reason: String| ConfigError::Url {
        what,
        value: value.to_string(),
        reason,
    };
    let url = url::Url::parse(value).map_err(|e| err(e.to_string()))?;
    if !schemes.contains(&url.scheme()) {
        return Err(err(format!("scheme must be one of {}", schemes.join(", "))));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(err("must not have a query or fragment".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_an_issuer() {
        let config = AgentConfig::default();
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Missing("--oidc-issuer-url"))
        ));
    }

    #[test]
    fn plain_http_issuer_is_refused() {
        let mut config = AgentConfig::default();
        config.oidc.issuer_url = "http://idp.example".into();
        assert!(matches!(config.validate(), Err(ConfigError::Url { .. })));
        config.oidc.issuer_url = "https://idp.example".into();
        assert!(config.validate().is_ok());
    }
}
