//! `gatehouse-agent` command-line flags (clap derive), turned into an [`AgentConfig`].

use crate::config::{AgentConfig, IN_CLUSTER_CA_FILE, IN_CLUSTER_TOKEN_FILE};
use crate::telemetry::LogFormat;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Gatehouse agent: an authenticating TLS proxy in front of the Kubernetes API.
///
/// kubectl talks to the agent with an OIDC ID token as its bearer token. The agent checks
/// the token against the issuer's published keys, then forwards the request to the API
/// server with its own credential, impersonating the verified user and groups, so that
/// Kubernetes RBAC and the API server's audit log still see the real person.
///
/// This version authenticates, refuses ambiguous paths, decides every request with the
/// policy (--policy-file or --policy-url; without one every request is refused), masks
/// secrets in responses and logs, relays watches, logs and exec/attach/port-forward
/// streams, records exec/attach sessions (asciicast), and audits every request.
/// Approvals (require_approval rules are refused for now) arrive in a later version.
#[derive(Debug, Parser)]
#[command(name = "gatehouse-agent", version, about, long_about)]
pub struct Args {
    /// Address to listen on for kubectl (HTTPS).
    #[arg(long, env = "GATEHOUSE_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,

    /// Server certificate chain (PEM) presented to kubectl.
    #[arg(long, env = "GATEHOUSE_TLS_CERT", value_name = "FILE")]
    pub tls_cert: PathBuf,

    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "GATEHOUSE_TLS_KEY", value_name = "FILE")]
    pub tls_key: PathBuf,

    /// Kubernetes API server to forward to. With --upstream-ca-file and
    /// --upstream-token-file this is the default upstream source (their defaults are the
    /// files a pod gets mounted); --upstream-kubeconfig or --upstream-in-cluster replace all three.
    #[arg(
        long,
        env = "GATEHOUSE_UPSTREAM_URL",
        default_value = "https://kubernetes.default.svc"
    )]
    pub upstream_url: String,

    /// CA bundle (PEM) that signs the API server's certificate.
    #[arg(long, env = "GATEHOUSE_UPSTREAM_CA_FILE", value_name = "FILE", default_value = IN_CLUSTER_CA_FILE)]
    pub upstream_ca_file: PathBuf,

    /// The agent's own bearer token for the API server (a service-account token with
    /// `impersonate` rights). Re-read whenever the file changes, so rotation needs no restart.
    #[arg(long, env = "GATEHOUSE_UPSTREAM_TOKEN_FILE", value_name = "FILE", default_value = IN_CLUSTER_TOKEN_FILE)]
    pub upstream_token_file: PathBuf,

    /// Timeout for connecting to the API server (e.g. 5s, 500ms).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub upstream_connect_timeout: Duration,

    // --- upstream sources ---
    /// For an agent outside the cluster: take the API server (server URL, CA file or data)
    /// and the agent's own credential (token, tokenFile, client-certificate + client-key,
    /// or an exec plugin such as `aws eks get-token`) from this kubeconfig, instead of
    /// --upstream-url/--upstream-ca-file/--upstream-token-file. Relative paths in it are
    /// resolved against its directory. That credential needs the impersonation RBAC in
    /// deploy/agent-impersonation-rbac.yaml. insecure-skip-tls-verify is refused.
    #[arg(
        long,
        env = "GATEHOUSE_UPSTREAM_KUBECONFIG",
        value_name = "FILE",
        conflicts_with_all = ["upstream_url", "upstream_ca_file", "upstream_token_file", "upstream_in_cluster"]
    )]
    pub upstream_kubeconfig: Option<PathBuf>,

    /// Context of --upstream-kubeconfig to use (default: its current-context).
    #[arg(
        long,
        env = "GATEHOUSE_UPSTREAM_CONTEXT",
        value_name = "NAME",
        requires = "upstream_kubeconfig"
    )]
    pub upstream_context: Option<String>,

    /// For an agent running as a pod: API server from KUBERNETES_SERVICE_HOST and
    /// KUBERNETES_SERVICE_PORT, credential and CA from the mounted service account
    /// (token re-read when kubelet rotates it). Fails at start outside a pod.
    #[arg(
        long,
        conflicts_with_all = ["upstream_url", "upstream_ca_file", "upstream_token_file"]
    )]
    pub upstream_in_cluster: bool,

    // --- EKS upstream credential ---
    /// The agent's own credential at the API server: `token-file` (--upstream-token-file,
    /// or what --upstream-in-cluster / --upstream-kubeconfig provide), or `eks`: a token
    /// presigned with a dedicated IAM role (base credentials from the AWS default chain:
    /// IRSA web identity, EKS Pod Identity, environment; then --assume-role-arn if given).
    /// With `eks` the URL and CA still come from --upstream-url/--upstream-ca-file or
    /// --upstream-in-cluster, and --upstream-token-file is not used. STS unreachable: the
    /// agent answers 503 until it is back.
    #[arg(long, value_enum, env = "GATEHOUSE_UPSTREAM_CREDENTIAL", default_value_t = UpstreamCredentialKind::TokenFile)]
    pub upstream_credential: UpstreamCredentialKind,

    /// EKS cluster name the token is bound to (the signed `x-k8s-aws-id` header); needed
    /// with `--upstream-credential eks`.
    #[arg(
        long,
        env = "GATEHOUSE_EKS_CLUSTER_NAME",
        value_name = "NAME",
        required_if_eq("upstream_credential", "eks")
    )]
    pub eks_cluster_name: Option<String>,

    /// AWS region of STS and of the token's signature (default: AWS_REGION, then
    /// AWS_DEFAULT_REGION).
    #[arg(long, env = "GATEHOUSE_AWS_REGION", value_name = "REGION")]
    pub aws_region: Option<String>,

    /// STS endpoint for AssumeRole and the presigned token, e.g. a VPC endpoint (default:
    /// https://sts.<region>.amazonaws.com). The base chain's own STS call (IRSA's
    /// AssumeRoleWithWebIdentity) follows the SDK's AWS_ENDPOINT_URL_STS.
    #[arg(long, env = "GATEHOUSE_STS_ENDPOINT", value_name = "URL")]
    pub sts_endpoint: Option<String>,

    /// IAM role to assume with the base credentials (the role mapped to Kubernetes RBAC).
    /// Without it the base credentials' own identity is used (e.g. the IRSA role itself).
    #[arg(long, env = "GATEHOUSE_ASSUME_ROLE_ARN", value_name = "ARN")]
    pub assume_role_arn: Option<String>,

    /// RoleSessionName of the AssumeRole call (shows in CloudTrail and the session ARN).
    #[arg(
        long,
        env = "GATEHOUSE_ROLE_SESSION_NAME",
        value_name = "NAME",
        default_value = "gatehouse-agent"
    )]
    pub role_session_name: String,

    /// ExternalId of the AssumeRole call, if the role's trust policy requires one.
    #[arg(
        long,
        env = "GATEHOUSE_EXTERNAL_ID",
        value_name = "ID",
        requires = "assume_role_arn"
    )]
    pub external_id: Option<String>,

    /// OIDC issuer URL (HTTPS). Must equal the tokens' `iss` claim; keys are discovered
    /// from <URL>/.well-known/openid-configuration.
    #[arg(long, env = "GATEHOUSE_OIDC_ISSUER_URL")]
    pub oidc_issuer_url: String,

    /// CA bundle (PEM) for the issuer's TLS certificate. Default: the Mozilla root set.
    #[arg(long, env = "GATEHOUSE_OIDC_CA_FILE", value_name = "FILE")]
    pub oidc_ca_file: Option<PathBuf>,

    /// OAuth client id the ID tokens must be issued to (their `aud`).
    #[arg(long, env = "GATEHOUSE_OIDC_CLIENT_ID", default_value = "gatehouse")]
    pub oidc_client_id: String,

    /// Claim used as the Kubernetes username (`email` requires `email_verified: true`).
    #[arg(long, default_value = "sub")]
    pub oidc_username_claim: String,

    /// Claim holding the user's groups (string or list of strings).
    #[arg(long, default_value = "groups")]
    pub oidc_groups_claim: String,

    /// Prefix added to every username, e.g. `oidc:`. Usernames starting with `system:`
    /// are always refused.
    #[arg(long, default_value = "")]
    pub oidc_username_prefix: String,

    /// Prefix added to every group. Groups starting with `system:` are always dropped.
    #[arg(long, default_value = "")]
    pub oidc_groups_prefix: String,

    /// Clock skew tolerated on token `exp`/`nbf`.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub oidc_clock_skew: Duration,

    /// How long in-flight requests may finish after SIGTERM/SIGINT.
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    pub drain_timeout: Duration,

    // --- periodic JWKS refresh ---
    /// Interval at which the issuer's signing keys are re-fetched in the background, so a
    /// key rotation at the IdP needs no restart. A failed refresh keeps the last good keys.
    /// Unknown `kid`s also trigger a fetch (at most every 10s). Verified tokens stay cached
    /// (by digest) until they expire, even if their key is withdrawn meanwhile.
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    pub oidc_jwks_refresh: Duration,

    // --- operations endpoints ---
    /// Plain-HTTP address for /healthz (process up), /readyz (API server reachable with the
    /// agent's credential and OIDC keys loaded) and /metrics (Prometheus). Keep it off the
    /// public network; `off` disables it.
    #[arg(long, env = "GATEHOUSE_OPS_LISTEN", value_parser = parse_ops_listen, default_value = "127.0.0.1:9090")]
    pub ops_listen: OpsListen,

    // --- listener: mTLS and limits ---
    /// CA bundle (PEM) for client certificates. A certificate signed by it authenticates
    /// like at the API server (CN = user, O = groups) when no bearer token is sent;
    /// clients without a certificate still connect and use OIDC. Default: no client certs.
    #[arg(long, env = "GATEHOUSE_CLIENT_CA_FILE", value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,

    /// Time a client gets to finish the TLS handshake.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub tls_handshake_timeout: Duration,

    /// Time a client gets to send a complete HTTP/1.1 request head (cuts slowloris clients).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub header_read_timeout: Duration,

    /// Largest HTTP/1.1 request head in bytes (request line + headers); larger gets 431.
    /// Kept well above the 16 KiB bearer-token limit, so an oversized token gets a
    /// `v1.Status` 401 that kubectl prints rather than a bare 431.
    #[arg(long, default_value_t = 256 * 1024)]
    pub max_header_bytes: usize,

    /// Most headers in one HTTP/1.1 request; more gets 431.
    #[arg(long, default_value_t = 100)]
    pub max_headers: usize,

    /// HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    pub h2_max_header_list_size: u32,

    /// HTTP/2 concurrent streams per connection.
    #[arg(long, default_value_t = 250)]
    pub h2_max_concurrent_streams: u32,

    /// Interval of HTTP/2 keep-alive pings (an unresponsive client is dropped).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub keep_alive_interval: Duration,

    /// Most open client connections; connections beyond are closed at once.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,

    /// Log format.
    #[arg(long, value_enum, env = "GATEHOUSE_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    // --- audit ---
    /// Cluster name stamped on every audit event.
    #[arg(long, env = "GATEHOUSE_CLUSTER_NAME", default_value = "")]
    pub cluster_name: String,
    /// Node name stamped on every audit event (default: this host's name).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Write audit events as JSON lines to FILE (`-` = stdout); without it they go only to
    /// the `gatehouse::audit` log target.
    #[arg(long, env = "GATEHOUSE_AUDIT_LOG", value_name = "FILE")]
    pub audit_log: Option<String>,

    // --- spool + shipper ---
    /// Durable audit spool directory: every audit event is appended here (CRC-checked
    /// segment files, fsynced in batches) before it is shipped, and deleted only once the
    /// collector acked it. Without it, events are not shipped anywhere.
    #[arg(long, env = "GATEHOUSE_SPOOL_DIR", value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Bound on the spool's size in bytes (e.g. 1073741824, 512Mi, 2Gi).
    #[arg(long, value_parser = parse_bytes, default_value = "1Gi")]
    pub spool_max_bytes: u64,
    /// Segment size: a segment is sealed past it; space is freed a segment at a time.
    #[arg(long, value_parser = parse_bytes, default_value = "64Mi")]
    pub spool_segment_bytes: u64,
    /// fsync the spool after this many events...
    #[arg(long, default_value_t = 256)]
    pub spool_fsync_every: u64,
    /// ...or this long after the first unsynced one (bounds what a crash can lose).
    #[arg(long, value_parser = parse_duration, default_value = "20ms")]
    pub spool_fsync_interval: Duration,
    /// When the spool is full: `fail-closed` answers every request 503 and reports not
    /// ready until the collector catches up; `keep-serving` serves on and drops events
    /// (counted in gatehouse_agent_spool_dropped_events_total, logged as errors).
    #[arg(long, value_enum, default_value = "fail-closed")]
    pub spool_full: crate::spool::FullPolicy,
    /// Collector to ship the spool to (`https://host:port`; needs --spool-dir).
    #[arg(long, env = "GATEHOUSE_COLLECTOR_URL")]
    pub collector_url: Option<String>,
    /// CA bundle (PEM) of the collector's certificate. Default: the Mozilla root set.
    #[arg(long, env = "GATEHOUSE_COLLECTOR_CA_FILE", value_name = "FILE")]
    pub collector_ca_file: Option<PathBuf>,
    /// Bearer token for the collector (e.g. a projected service-account token), re-read
    /// on every connection so rotation needs no restart.
    #[arg(long, env = "GATEHOUSE_COLLECTOR_TOKEN_FILE", value_name = "FILE")]
    pub collector_token_file: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS to the collector (with --collector-client-key).
    #[arg(long, value_name = "FILE", requires = "collector_client_key")]
    pub collector_client_cert: Option<PathBuf>,
    /// Key (PEM) of --collector-client-cert.
    #[arg(long, value_name = "FILE", requires = "collector_client_cert")]
    pub collector_client_key: Option<PathBuf>,
    /// Most events in one batch to the collector (also bounded to ~4 MiB). A quiet agent
    /// sends what it has; the bound matters when catching up on a backlog, where larger
    /// batches mean fewer, larger INSERTs.
    #[arg(long, default_value_t = 5000)]
    pub ship_batch_events: usize,
    /// Batches sent to the collector before their acks arrive.
    #[arg(long, default_value_t = 4)]
    pub ship_window: usize,
    /// Cap of the reconnect backoff (exponential from 200ms, with jitter).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub ship_backoff_max: Duration,

    // --- masking ---
    /// YAML file of named masking profiles (`profiles: [{name, kinds, text, ...}]`); a
    /// built-in `default` profile exists unless the file redefines it.
    #[arg(long, env = "GATEHOUSE_MASK_PROFILES", value_name = "FILE")]
    pub mask_profiles: Option<PathBuf>,
    /// Masking profile for requests whose policy rule names none; `none` turns masking
    /// off for them.
    #[arg(
        long,
        env = "GATEHOUSE_DEFAULT_MASK_PROFILE",
        default_value = "default"
    )]
    pub default_mask_profile: String,
    /// Largest non-streaming response masked (after decompression). Larger responses are
    /// refused with an error, never sent unmasked; watches and logs stream and have no limit
    /// beyond one watch event.
    #[arg(long, value_parser = parse_bytes, default_value = "64Mi")]
    pub mask_body_limit: u64,
    // --- policy ---
    /// Policy file requests are decided with (development, tests, or a mounted ConfigMap).
    /// Checked at start (a bad file stops the agent) and re-read when it changes; a bad
    /// edit is refused with its line number and the previous policy stays active.
    #[arg(
        long,
        env = "GATEHOUSE_POLICY_FILE",
        value_name = "FILE",
        conflicts_with = "policy_url"
    )]
    pub policy_file: Option<PathBuf>,
    /// Collector to follow the policy from (`https://host:port` of its agent listener, as
    /// --collector-url; authenticated with the --collector-ca-file, --collector-client-cert
    /// and --collector-token-file settings). Changes arrive by long-poll. Until a first
    /// policy is loaded (or read from --policy-cache) every request gets 503.
    #[arg(long, env = "GATEHOUSE_POLICY_URL", value_name = "URL")]
    pub policy_url: Option<String>,
    /// File keeping the last good policy from --policy-url (put it on the agent's state
    /// volume), so an agent restarted while the collector is down still decides requests.
    #[arg(
        long,
        env = "GATEHOUSE_POLICY_CACHE",
        value_name = "FILE",
        requires = "policy_url"
    )]
    pub policy_cache: Option<PathBuf>,
    // --- session recording and limits (issue 6) ---
    /// Record exec/attach sessions (asciicast v2, stdin included) and port-forward
    /// metadata, shipped as `session_chunk` events with the audit events. Recorded text is
    /// masked first with the request's masking profile's text detectors (the built-in ones
    /// when it names none).
    #[arg(long, env = "GATEHOUSE_SESSION_RECORDING", default_value_t = true, action = clap::ArgAction::Set)]
    pub session_recording: bool,
    /// End an exec/attach/port-forward session after this long without a byte either way
    /// (e.g. 15m); kubectl prints why. 0 = never.
    #[arg(long, value_parser = parse_duration, default_value = "0")]
    pub session_idle_timeout: Duration,
    /// End a session this long after it started (e.g. 8h); kubectl prints why. 0 = never.
    #[arg(long, value_parser = parse_duration, default_value = "0")]
    pub session_max_duration: Duration,

    // --- runtime ---
    /// Threads serving requests. The default, 2, is fixed rather than one per core: a node
    /// agent's load is one node's kubectl traffic, and every extra idle worker is one more
    /// thread woken to look for work. Two keep requests moving while one thread does a TLS
    /// handshake or is preempted; 1 runs everything on one thread.
    #[arg(long, env = "GATEHOUSE_WORKER_THREADS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub worker_threads: u16,
}

impl Args {
    /// The configuration these flags describe.
    pub fn into_config(self) -> AgentConfig {
        let mut config = AgentConfig {
            listen: self.listen,
            tls_cert_file: self.tls_cert,
            tls_key_file: self.tls_key,
            drain_timeout: self.drain_timeout,
            ..AgentConfig::default()
        };
        config.upstream.url = self.upstream_url;
        config.upstream.ca_file = Some(self.upstream_ca_file);
        config.upstream.token_file = Some(self.upstream_token_file);
        config.upstream.connect_timeout = self.upstream_connect_timeout;
        // --- upstream sources ---
        config.upstream.source = match (self.upstream_kubeconfig, self.upstream_in_cluster) {
            (Some(path), _) => crate::config::UpstreamSource::Kubeconfig {
                path,
                context: self.upstream_context,
            },
            (None, true) => crate::config::UpstreamSource::InCluster,
            (None, false) => crate::config::UpstreamSource::Flags,
        };
        // --- EKS upstream credential ---
        config.upstream.eks = match self.upstream_credential {
            UpstreamCredentialKind::TokenFile => None,
            UpstreamCredentialKind::Eks => Some(crate::config::EksConfig {
                cluster_name: self.eks_cluster_name.unwrap_or_default(),
                region: self.aws_region,
                sts_endpoint: self.sts_endpoint,
                assume_role_arn: self.assume_role_arn,
                role_session_name: self.role_session_name,
                external_id: self.external_id,
            }),
        };
        config.oidc.issuer_url = self.oidc_issuer_url;
        config.oidc.ca_file = self.oidc_ca_file;
        config.oidc.client_id = self.oidc_client_id;
        config.oidc.username_claim = self.oidc_username_claim;
        config.oidc.groups_claim = self.oidc_groups_claim;
        config.oidc.username_prefix = self.oidc_username_prefix;
        config.oidc.groups_prefix = self.oidc_groups_prefix;
        config.oidc.clock_skew = self.oidc_clock_skew;
        config.oidc.jwks_refresh_interval = self.oidc_jwks_refresh;
        config.ops_listen = self.ops_listen.0;
        // --- listener: mTLS and limits ---
        config.client_ca_file = self.client_ca_file;
        config.tls_handshake_timeout = self.tls_handshake_timeout;
        config.limits = crate::config::ListenerLimits {
            header_read_timeout: self.header_read_timeout,
            max_header_bytes: self.max_header_bytes,
            max_headers: self.max_headers,
            h2_max_header_list_size: self.h2_max_header_list_size,
            h2_max_concurrent_streams: self.h2_max_concurrent_streams,
            keep_alive_interval: self.keep_alive_interval,
            max_connections: self.max_connections,
        };
        config.site.cluster = self.cluster_name;
        config.site.node = self.node_name.unwrap_or_else(hostname);
        config.audit_log = self.audit_log;
        // --- spool + shipper ---
        config.spool = self.spool_dir.map(|dir| crate::spool::SpoolConfig {
            max_bytes: self.spool_max_bytes,
            segment_bytes: self.spool_segment_bytes,
            fsync_every: self.spool_fsync_every,
            fsync_interval: self.spool_fsync_interval,
            full_policy: self.spool_full,
            ..crate::spool::SpoolConfig::new(dir)
        });
        config.mask = crate::forward::mask::MaskConfig {
            profiles_file: self.mask_profiles,
            default_profile: self.default_mask_profile,
            body_limit: usize::try_from(self.mask_body_limit).unwrap_or(usize::MAX),
        };
        // --- policy ---
        config.policy.file = self.policy_file;
        config.policy.cache = self.policy_cache;
        config.policy.url = self.policy_url.map(|url| crate::ship::ShipConfig {
            ca_file: self.collector_ca_file.clone(),
            token_file: self.collector_token_file.clone(),
            client_cert: self.collector_client_cert.clone(),
            client_key: self.collector_client_key.clone(),
            ..crate::ship::ShipConfig::new(url, config.site.node.clone())
        });
        config.ship = self.collector_url.map(|url| crate::ship::ShipConfig {
            ca_file: self.collector_ca_file,
            token_file: self.collector_token_file,
            client_cert: self.collector_client_cert,
            client_key: self.collector_client_key,
            batch_max_events: self.ship_batch_events,
            window: self.ship_window,
            backoff_max: self.ship_backoff_max,
            ..crate::ship::ShipConfig::new(url, config.site.node.clone())
        });
        // --- session recording and limits (issue 6) ---
        config.session_recording = self.session_recording;
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        config.session_limits = crate::forward::session::SessionLimits {
            idle: nonzero(self.session_idle_timeout),
            max: nonzero(self.session_max_duration),
        };
        config
    }
}

// --- EKS upstream credential ---
/// `--upstream-credential`: what the agent presents to the API server as itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UpstreamCredentialKind {
    /// A bearer token file (or the credential of the kubeconfig / in-cluster source).
    TokenFile,
    /// An EKS token presigned with an IAM role's credentials.
    Eks,
}

/// `--ops-listen`: an address, or `off`.
#[derive(Debug, Clone, Copy)]
pub struct OpsListen(pub Option<SocketAddr>);

fn parse_ops_listen(s: &str) -> Result<OpsListen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(OpsListen(None));
    }
    s.parse()
        .map(|a| OpsListen(Some(a)))
        .map_err(|e| format!("{e} (expected host:port or `off`)"))
}

/// Parses `500ms`, `30s`, `5m`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!(
            "invalid duration unit in {s:?} (use ms, s, m or h)"
        )),
    }
}

// --- spool ---
/// Parses a byte count: `1048576`, `512Ki`, `64Mi`, `1Gi` (also `K`/`M`/`G` as powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult: u64 = match unit {
        "" => 1,
        "Ki" | "K" => 1 << 10,
        "Mi" | "M" => 1 << 20,
        "Gi" | "G" => 1 << 30,
        _ => return Err(format!("invalid size unit in {s:?} (use Ki, Mi or Gi)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// This host's name, for `--node-name`'s default.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn flags_become_config() -> Result<(), clap::Error> {
        let args = Args::try_parse_from([
            "gatehouse-agent",
            "--tls-cert=c",
            "--tls-key=k",
            "--oidc-issuer-url=https://idp",
            "--upstream-url=https://10.0.0.1:6443",
            "--oidc-username-claim=email",
            "--drain-timeout=2m",
        ])?;
        let config = args.into_config();
        assert_eq!(config.oidc.username_claim, "email");
        assert_eq!(config.upstream.url, "https://10.0.0.1:6443");
        assert_eq!(config.drain_timeout, Duration::from_secs(120));
        assert_eq!(config.oidc.client_id, "gatehouse");
        Ok(())
    }

    // --- upstream sources ---
    #[test]
    fn exactly_one_upstream_source() -> Result<(), clap::Error> {
        use crate::config::UpstreamSource;
        let base = [
            "gatehouse-agent",
            "--tls-cert=c",
            "--tls-key=k",
            "--oidc-issuer-url=https://idp",
        ];
        let with = |extra: &[&str]| {
            let mut argv: Vec<&str> = base.to_vec();
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv)
        };
        let config = with(&["--upstream-kubeconfig=/k", "--upstream-context=prod"])?.into_config();
        assert_eq!(
            config.upstream.source,
            UpstreamSource::Kubeconfig {
                path: "/k".into(),
                context: Some("prod".into())
            }
        );
        assert_eq!(
            with(&["--upstream-in-cluster"])?
                .into_config()
                .upstream
                .source,
            UpstreamSource::InCluster
        );
        assert_eq!(
            with(&[])?.into_config().upstream.source,
            UpstreamSource::Flags
        );
        for bad in [
            &["--upstream-kubeconfig=/k", "--upstream-url=https://x"][..],
            &["--upstream-kubeconfig=/k", "--upstream-token-file=/t"][..],
            &["--upstream-kubeconfig=/k", "--upstream-in-cluster"][..],
            &["--upstream-in-cluster", "--upstream-ca-file=/ca"][..],
            &["--upstream-context=prod"][..],
        ] {
            assert!(with(bad).is_err(), "{bad:?} accepted");
        }
        Ok(())
    }

    // --- EKS upstream credential ---
    #[test]
    fn eks_credential_flags() -> Result<(), clap::Error> {
        let base = [
            "gatehouse-agent",
            "--tls-cert=c",
            "--tls-key=k",
            "--oidc-issuer-url=https://idp",
        ];
        let with = |extra: &[&str]| {
            let mut argv: Vec<&str> = base.to_vec();
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv)
        };
        assert_eq!(with(&[])?.into_config().upstream.eks, None);
        let config = with(&[
            "--upstream-credential=eks",
            "--eks-cluster-name=prod",
            "--aws-region=eu-west-1",
            "--sts-endpoint=https://sts.eu-west-1.amazonaws.com",
            "--assume-role-arn=arn:aws:iam::111122223333:role/gatehouse",
            "--external-id=xyz",
        ])?
        .into_config();
        let eks = config.upstream.eks.ok_or_else(|| {
            clap::Error::raw(clap::error::ErrorKind::MissingRequiredArgument, "no eks")
        })?;
        assert_eq!(eks.cluster_name, "prod");
        assert_eq!(eks.role_session_name, "gatehouse-agent");
        assert_eq!(eks.external_id.as_deref(), Some("xyz"));
        assert!(
            with(&["--upstream-credential=eks"]).is_err(),
            "needs a cluster name"
        );
        assert!(
            with(&["--external-id=x"]).is_err(),
            "external id needs a role"
        );
        Ok(())
    }

    // --- spool + shipper ---
    #[test]
    fn spool_and_collector_flags() -> Result<(), clap::Error> {
        let base = [
            "gatehouse-agent",
            "--tls-cert=c",
            "--tls-key=k",
            "--oidc-issuer-url=https://idp",
        ];
        let config = Args::try_parse_from(base)?.into_config();
        assert!(config.spool.is_none() && config.ship.is_none());
        let mut args = base.to_vec();
        args.extend([
            "--spool-dir=/var/spool/gh",
            "--spool-max-bytes=2Mi",
            "--spool-full=keep-serving",
            "--collector-url=https://collector:8443",
            "--node-name=node-a",
        ]);
        let config = Args::try_parse_from(args)?.into_config();
        let spool = config.spool.as_ref().map(|s| (s.max_bytes, s.full_policy));
        assert_eq!(
            spool,
            Some((2 << 20, crate::spool::FullPolicy::KeepServing))
        );
        assert_eq!(
            config.ship.as_ref().map(|s| s.agent.as_str()),
            Some("node-a")
        );
        assert!(config.validate().is_ok());
        let mut lone = base.to_vec();
        lone.push("--collector-url=https://collector:8443");
        let config = Args::try_parse_from(lone)?.into_config();
        assert!(config.validate().is_err(), "shipping needs a spool");
        let mut half = base.to_vec();
        half.push("--collector-client-cert=c.pem");
        assert!(Args::try_parse_from(half).is_err(), "cert without key");
        Ok(())
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("64Mi"), Ok(64 << 20));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("1Ti").is_err());
        assert!(parse_bytes("99999999999999Gi").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5 parsecs").is_err());
    }
}
