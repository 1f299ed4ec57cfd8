//! `gatehouse` user CLI.

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Gatehouse command-line tool.
///
/// This version logs in to an OIDC issuer (`gatehouse login`: browser with PKCE, or the
/// device flow), acts as kubectl's exec credential plugin from the cached tokens, refreshing
/// them when they expire (`gatehouse token`), drops them (`gatehouse logout`), writes a
/// kubeconfig (`gatehouse kubeconfig`), checks a collector's health, searches the audit
/// trail, and validates and explains policies (`gatehouse policy check|test`). Approvals
/// arrive in a later version.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about, long_about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the version of this CLI.
    Version,
    /// Check that a collector is up (calls its /healthz).
    Status {
        /// Collector base URL (HTTP), e.g. http://127.0.0.1:9080.
        #[arg(long, env = "GATEHOUSE_COLLECTOR_URL")]
        collector: String,
    },
    // --- login / kubectl exec plugin (issue 3, item 7) ---
    /// Log in to the OIDC issuer and cache the ID and refresh tokens.
    ///
    /// By default opens a browser on the issuer's login page (authorization code with PKCE
    /// S256); the issuer redirects back to a one-shot listener on 127.0.0.1. With --device
    /// it prints a URL and a code to enter on any device instead (RFC 8628), for machines
    /// without a browser.
    Login(LoginArgs),
    /// kubectl exec credential plugin: print an ExecCredential with the cached ID token.
    ///
    /// kubectl runs this (see `users[].user.exec` in the kubeconfig). It answers in the
    /// apiVersion named by KUBERNETES_EXEC_INFO (v1 for kubectl >= 1.22, v1beta1 for
    /// older). Tokens are read from $XDG_CACHE_HOME/gatehouse (else ~/.cache/gatehouse).
    /// An ID token within 30 s of expiry is renewed with the refresh token (one refresh
    /// even when kubectl runs many of these at once). When no valid token can be had it
    /// exits 1 with a hint to run `gatehouse login`.
    Token(IssuerArgs),
    /// Delete the cached tokens for an issuer and client id.
    Logout(IssuerArgs),
    /// Add a cluster (agent URL + CA), an exec user running `gatehouse token`, and a
    /// context to a kubeconfig, keeping its other entries; switches to that context.
    ///
    /// The merge is done by `kubectl config` (set with --kubectl / GATEHOUSE_KUBECTL).
    Kubeconfig(KubeconfigArgs),
    // --- reading the audit trail (issue 7, item 5) ---
    /// Read the audit trail of API requests from the collector's query API.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Read exec, attach and port-forward sessions from the collector's query API.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    // --- policy (issue 5, item 1) ---
    /// Validate a policy file, or explain which rule decides a request.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate a policy file: every problem is printed with its line and column; exits 1
    /// if there is any.
    Check {
        /// The policy file (YAML, `kind: Policy`).
        file: std::path::PathBuf,
    },
    /// Explain which rule decides a request, and which other rules match it.
    ///
    /// Give the request as a kubectl command line after `--`, e.g.
    /// `gatehouse policy test policy.yaml --as alice --groups engineers -- kubectl delete ns prod`,
    /// or with --verb/--resource/--namespace/--name (which also override the parsed
    /// line). Exits 0 whatever the decision; 1 when the file or the request is unusable.
    Test(Box<PolicyTestArgs>),
}

#[derive(Debug, clap::Args)]
struct PolicyTestArgs {
    /// The policy file.
    file: std::path::PathBuf,
    /// The user making the request.
    #[arg(long = "as", value_name = "USER")]
    user: String,
    /// The user's groups (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
    /// Kubernetes verb (get, list, watch, create, update, patch, delete, ...).
    #[arg(long)]
    verb: Option<String>,
    /// Plural resource, e.g. pods.
    #[arg(long)]
    resource: Option<String>,
    /// API group (empty = core).
    #[arg(long)]
    api_group: Option<String>,
    /// Subresource, e.g. exec or log.
    #[arg(long)]
    subresource: Option<String>,
    /// Namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Object name.
    #[arg(long)]
    name: Option<String>,
    /// Treat the request as a dry run.
    #[arg(long)]
    dry_run: bool,
    /// The kubectl command line (after `--`).
    #[arg(last = true)]
    kubectl: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Search API requests, newest first (exact matches; all filters must match).
    ///
    /// Example: gatehouse audit search --collector-url https://collector:9443 --ca-file
    /// ca.crt --issuer-url https://idp --user alice --since 24h --all
    Search(AuditSearchArgs),
}

#[derive(Debug, Subcommand)]
enum SessionsCommand {
    /// List sessions, newest (by start) first.
    List(SessionListArgs),
    /// One session with the API calls that belong to it.
    Show(SessionShowArgs),
    /// Play a session's recording in the terminal with its real timing (or faster), or
    /// save it as an asciicast v2 file (`asciinema play FILE`).
    ///
    /// Example: gatehouse sessions replay 0190c0de-... --speed 4 --collector-url
    /// https://collector:9443 --ca-file ca.crt --issuer-url https://idp
    Replay(SessionReplayArgs),
}

#[derive(Debug, clap::Args)]
struct SessionReplayArgs {
    #[command(flatten)]
    query: QueryArgs,
    /// The session id (the SESSION column of `gatehouse sessions list`).
    id: String,
    /// Play this many times faster (0.5 = half speed).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Longest pause between two outputs, in seconds (after --speed); default: as recorded.
    #[arg(long)]
    max_wait: Option<f64>,
    /// Write the output at once, without timing (for pipes and grep).
    #[arg(long)]
    raw: bool,
    /// Save the recording (.cast, asciicast v2) to FILE instead of playing it.
    #[arg(long, value_name = "FILE")]
    output_file: Option<std::path::PathBuf>,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    /// Aligned columns for a terminal.
    Table,
    /// The API's JSON (`{"items":[...],"next":...}`; with --all, every item in one page).
    Json,
    /// One JSON object a line, every match (exported by the collector, cursors followed).
    Ndjson,
}

#[derive(Debug, clap::Args)]
struct QueryArgs {
    /// Query API base URL of the collector (its --api-listen), e.g. https://collector:9443.
    #[arg(long, env = "GATEHOUSE_COLLECTOR_API_URL")]
    collector_url: String,
    /// PEM CA of the collector's certificate (default: the Mozilla roots).
    #[arg(long, env = "GATEHOUSE_COLLECTOR_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// File holding an ID token to send (wins over the `gatehouse login` cache).
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// Issuer whose cached ID token (from `gatehouse login`) is sent; renewed when needed.
    #[arg(long, visible_alias = "issuer", env = "GATEHOUSE_ISSUER_URL")]
    issuer_url: Option<String>,
    /// OAuth client id of that login.
    #[arg(long, env = "GATEHOUSE_CLIENT_ID", default_value = "gatehouse")]
    client_id: String,
    /// PEM CA of the issuer (for renewing the token).
    #[arg(long, env = "GATEHOUSE_ISSUER_CA_FILE")]
    issuer_ca_file: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    /// Only events at or after this time: RFC 3339 or a duration ago (30m, 24h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Only events before this time (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// Items per page (the collector clamps it to 1..=1000; default 100).
    #[arg(long)]
    limit: Option<u32>,
    /// Follow the cursors and print every match, not just the first page.
    #[arg(long)]
    all: bool,
}

#[derive(Debug, clap::Args)]
struct AuditSearchArgs {
    #[command(flatten)]
    query: QueryArgs,
    #[command(flatten)]
    list: ListArgs,
    /// Username (exact, with any prefix the agent adds).
    #[arg(long)]
    user: Option<String>,
    /// A group the user was in.
    #[arg(long)]
    group: Option<String>,
    /// Kubernetes verb (get, list, delete, create, ...).
    #[arg(long)]
    verb: Option<String>,
    /// Plural resource (pods, secrets, ...).
    #[arg(long)]
    resource: Option<String>,
    /// Namespace.
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Object name.
    #[arg(long)]
    name: Option<String>,
    /// Decision: allow, deny or require_approval.
    #[arg(long)]
    decision: Option<String>,
    /// HTTP status code returned.
    #[arg(long)]
    status: Option<u16>,
    /// Session id (the calls of one exec/attach/port-forward session).
    #[arg(long)]
    session: Option<String>,
}

#[derive(Debug, clap::Args)]
struct SessionListArgs {
    #[command(flatten)]
    query: QueryArgs,
    #[command(flatten)]
    list: ListArgs,
    /// Username.
    #[arg(long)]
    user: Option<String>,
    /// Pod namespace.
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Pod name.
    #[arg(long)]
    pod: Option<String>,
    /// exec, attach or port_forward.
    #[arg(long)]
    kind: Option<String>,
}

#[derive(Debug, clap::Args)]
struct SessionShowArgs {
    #[command(flatten)]
    query: QueryArgs,
    /// The session id (the SESSION column of `gatehouse sessions list`).
    id: String,
}

#[derive(Debug, clap::Args)]
struct KubeconfigArgs {
    #[command(flatten)]
    issuer: IssuerArgs,
    /// Agent URL, e.g. https://127.0.0.1:8443.
    #[arg(long, env = "GATEHOUSE_AGENT_URL")]
    server: String,
    /// CA bundle (PEM) for the agent's serving certificate; embedded in the kubeconfig.
    #[arg(long)]
    ca_file: std::path::PathBuf,
    /// Kubeconfig to write or merge into (default: $KUBECONFIG's first entry, else ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    /// Name of the cluster, user and context entries.
    #[arg(long, default_value = "gatehouse")]
    context_name: String,
    /// Default namespace of the context.
    #[arg(long)]
    namespace: Option<String>,
    /// exec credential apiVersion: v1 (kubectl >= 1.22) or v1beta1 (older kubectl).
    #[arg(long, default_value = "v1", value_parser = ["v1", "v1beta1"])]
    exec_api_version: String,
    /// kubectl binary used to edit the kubeconfig.
    #[arg(long, env = "GATEHOUSE_KUBECTL", default_value = "kubectl")]
    kubectl: std::path::PathBuf,
}

/// Which issuer + client the tokens belong to.
#[derive(Debug, clap::Args)]
struct IssuerArgs {
    /// OIDC issuer URL (https://...).
    #[arg(long, visible_alias = "issuer", env = "GATEHOUSE_ISSUER_URL")]
    issuer_url: String,
    /// OAuth client id registered at the issuer.
    #[arg(long, env = "GATEHOUSE_CLIENT_ID", default_value = "gatehouse")]
    client_id: String,
    /// CA bundle (PEM) the issuer's certificate verifies against (default: the public
    /// web roots).
    #[arg(long, env = "GATEHOUSE_ISSUER_CA_FILE")]
    issuer_ca_file: Option<std::path::PathBuf>,
}

impl IssuerArgs {
    /// The issuer URL as tokens are cached under (no trailing slash).
    fn issuer(&self) -> &str {
        self.issuer_url.trim_end_matches('/')
    }

    /// The `gatehouse login` command line that fixes an expired or missing login.
    fn login_hint(&self) -> String {
        let ca = self
            .issuer_ca_file
            .as_ref()
            .map(|p| format!(" --issuer-ca-file {}", p.display()))
            .unwrap_or_default();
        format!(
            "run `gatehouse login --issuer-url {} --client-id {}{ca}`",
            self.issuer(),
            self.client_id
        )
    }
}

#[derive(Debug, clap::Args)]
struct LoginArgs {
    #[command(flatten)]
    issuer: IssuerArgs,
    /// Use the device flow: print a URL and code to enter on any device.
    #[arg(long)]
    device: bool,
    /// Scopes to request (space-separated); offline_access asks for a refresh token.
    #[arg(long, default_value = "openid offline_access email profile groups")]
    scopes: String,
    /// Do not start a browser; print the login URL to open by hand.
    #[arg(long)]
    no_browser: bool,
    /// Program that opens the login URL (default: $BROWSER, else xdg-open / open).
    #[arg(long, env = "GATEHOUSE_BROWSER")]
    browser: Option<String>,
    /// Seconds to wait for the login to complete.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Version => {
            println!("gatehouse {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Status { collector } => status(&collector).await,
        Command::Login(a) => {
            // A failed login is a message for a person, not a backtrace.
            if let Err(e) = login(&a).await {
                eprintln!("gatehouse login: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Token(a) => {
            // kubectl shows the plugin's stderr verbatim: one clean line, no backtrace.
            if let Err(e) = token(&a).await {
                eprintln!("{e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Logout(a) => logout(&a),
        Command::Kubeconfig(a) => kubeconfig(&a),
        Command::Audit(AuditCommand::Search(a)) => exit_on_error(audit_search(&a).await),
        Command::Sessions(SessionsCommand::List(a)) => exit_on_error(sessions_list(&a).await),
        Command::Sessions(SessionsCommand::Show(a)) => exit_on_error(sessions_show(&a).await),
        Command::Policy(PolicyCommand::Check { file }) => exit_on_error(policy_check(&file)),
        Command::Policy(PolicyCommand::Test(a)) => exit_on_error(policy_test(&a)),
        Command::Sessions(SessionsCommand::Replay(a)) => exit_on_error(sessions_replay(&a).await),
    }
}

fn read_policy(file: &std::path::Path) -> anyhow::Result<gatehouse_common::policy::Policy> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    gatehouse_common::policy::Policy::parse(&text).map_err(|e| {
        let lines: Vec<String> = e
            .issues
            .iter()
            .map(|i| format!("{}:{i}", file.display()))
            .collect();
        anyhow::anyhow!("invalid policy\n{}", lines.join("\n"))
    })
}

fn policy_check(file: &std::path::Path) -> anyhow::Result<()> {
    let policy = read_policy(file)?;
    println!("{}", gatehouse_collector::cli::policy::summary(&policy));
    Ok(())
}

fn policy_test(a: &PolicyTestArgs) -> anyhow::Result<()> {
    use gatehouse_collector::cli::policy::{TestRequest, explain, kubectl_request};
    let policy = read_policy(&a.file)?;
    let mut req = if a.kubectl.is_empty() {
        TestRequest::default()
    } else {
        kubectl_request(&a.kubectl)?
    };
    for (field, value) in [
        (&mut req.verb, &a.verb),
        (&mut req.resource, &a.resource),
        (&mut req.api_group, &a.api_group),
        (&mut req.subresource, &a.subresource),
        (&mut req.namespace, &a.namespace),
        (&mut req.name, &a.name),
    ] {
        if let Some(v) = value {
            *field = v.clone();
        }
    }
    req.dry_run |= a.dry_run;
    if req.verb.is_empty() || (req.path.is_none() && req.resource.is_empty()) {
        bail!("give the request as `-- kubectl ...` or with --verb and --resource");
    }
    print!("{}", explain(&policy, &req, &a.user, &a.groups));
    Ok(())
}

/// Tokens closer than this to expiry are not handed to kubectl (clock skew, request time).
const EXPIRY_SKEW_SECS: i64 = 30;

async fn token(a: &IssuerArgs) -> anyhow::Result<()> {
    use gatehouse_collector::cli::refresh::{TokenError, fresh_tokens};
    use gatehouse_collector::cli::{cache, exec_credential, http, oidc};
    use std::io::IsTerminal;
    let info = exec_credential::parse_exec_info(
        std::env::var("KUBERNETES_EXEC_INFO").ok().as_deref(),
        exec_credential::V1BETA1,
        std::io::stdin().is_terminal(),
    )?;
    let cache = cache::TokenCache::new(cache::default_dir()?);
    let client =
        || http::IssuerClient::new(a.issuer_ca_file.as_deref()).map_err(oidc::OidcError::from);
    let t = match fresh_tokens(
        &cache,
        a.issuer(),
        &a.client_id,
        chrono::Duration::seconds(EXPIRY_SKEW_SECS),
        client,
    )
    .await
    {
        Ok(t) => t,
        // Cache trouble has its own advice in the message.
        Err(e @ TokenError::Cache(_)) => bail!("gatehouse: {e}"),
        Err(e) => bail!("gatehouse: {e}: {}", a.login_hint()),
    };
    println!(
        "{}",
        exec_credential::render(info.api_version, &t.id_token, t.expires_at)
    );
    Ok(())
}

async fn login(a: &LoginArgs) -> anyhow::Result<()> {
    use gatehouse_collector::cli::login::{Browser, LoginParams, login_browser, login_device};
    use gatehouse_collector::cli::{cache, http};
    let cache = cache::TokenCache::new(cache::default_dir()?);
    let client = http::IssuerClient::new(a.issuer.issuer_ca_file.as_deref())?;
    let params = LoginParams {
        issuer: a.issuer.issuer().to_string(),
        client_id: a.issuer.client_id.clone(),
        scopes: a.scopes.clone(),
        timeout: Duration::from_secs(a.timeout),
    };
    let mut say = |line: &str| eprintln!("{line}");
    let tokens = if a.device {
        login_device(&client, &params, &mut say).await?
    } else {
        let browser = if a.no_browser {
            Browser::Print
        } else {
            Browser::Open(a.browser.clone().unwrap_or_else(default_browser))
        };
        login_browser(&client, &params, &browser, &mut say).await?
    };
    cache.store(&tokens)?;
    eprintln!(
        "logged in to {} (client {}); the ID token expires at {}{}",
        params.issuer,
        params.client_id,
        tokens
            .expires_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        if tokens.refresh_token.is_some() {
            " and is renewed automatically"
        } else {
            ""
        }
    );
    Ok(())
}

/// `$BROWSER`, else the desktop's URL opener.
fn default_browser() -> String {
    std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| {
            if cfg!(target_os = "macos") {
                "open".into()
            } else {
                "xdg-open".into()
            }
        })
}

fn kubeconfig(a: &KubeconfigArgs) -> anyhow::Result<()> {
    use gatehouse_collector::cli::kubeconfig::{KubeconfigEntry, kubectl_commands};
    let ca_file = std::fs::canonicalize(&a.ca_file)
        .with_context(|| format!("--ca-file {}", a.ca_file.display()))?;
    let gatehouse_bin = std::env::current_exe().context("cannot find this binary's path")?;
    let entry = KubeconfigEntry {
        server: a.server.clone(),
        ca_file,
        issuer_url: a.issuer.issuer().to_string(),
        client_id: a.issuer.client_id.clone(),
        issuer_ca_file: a
            .issuer
            .issuer_ca_file
            .as_ref()
            .map(|p| {
                std::fs::canonicalize(p)
                    .with_context(|| format!("--issuer-ca-file {}", p.display()))
            })
            .transpose()?,
        context_name: a.context_name.clone(),
        namespace: a.namespace.clone(),
        exec_api_version: format!("client.authentication.k8s.io/{}", a.exec_api_version),
        gatehouse_bin,
    };
    for args in kubectl_commands(&entry) {
        let mut cmd = std::process::Command::new(&a.kubectl);
        if let Some(k) = &a.kubeconfig {
            cmd.arg("--kubeconfig").arg(k);
        }
        let out = cmd
            .args(&args)
            .output()
            .with_context(|| format!("cannot run {}", a.kubectl.display()))?;
        if !out.status.success() {
            bail!(
                "{} {}: {}",
                a.kubectl.display(),
                args.get(1).map(|s| s.to_string_lossy()).unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    eprintln!("kubeconfig: context {} -> {}", a.context_name, a.server);
    Ok(())
}

fn logout(a: &IssuerArgs) -> anyhow::Result<()> {
    use gatehouse_collector::cli::cache;
    let cache = cache::TokenCache::new(cache::default_dir()?);
    if cache.remove(a.issuer(), &a.client_id)? {
        eprintln!("logged out of {} (client {})", a.issuer_url, a.client_id);
    } else {
        eprintln!(
            "no cached login for {} (client {})",
            a.issuer_url, a.client_id
        );
    }
    Ok(())
}

async fn status(collector: &str) -> anyhow::Result<()> {
    let url = format!("{}/healthz", collector.trim_end_matches('/'));
    let uri: http::Uri = url.parse().with_context(|| format!("invalid URL {url}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("only http:// collector URLs are supported in this version (got {collector})");
    }
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .with_context(|| format!("{url}: timed out after 5s"))?
        .with_context(|| format!("{url}: cannot connect"))?;
    let code = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    let body = String::from_utf8_lossy(&body);
    if !code.is_success() {
        bail!(
            "collector at {collector} is unhealthy: HTTP {code}: {}",
            body.trim()
        );
    }
    println!("collector {collector}: healthy ({})", body.trim());
    Ok(())
}

/// A failed query is a message for a person: one line, exit 1.
fn exit_on_error(result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = result {
        eprintln!("gatehouse: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

/// The ID token to send: --token-file, else the login cache of --issuer-url.
async fn query_token(q: &QueryArgs) -> anyhow::Result<String> {
    use gatehouse_collector::cli::refresh::{TokenError, fresh_tokens};
    use gatehouse_collector::cli::{cache, http, oidc};
    if let Some(path) = &q.token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --token-file {}", path.display()))?;
        let token = text.trim().to_string();
        if token.is_empty() {
            bail!("--token-file {} is empty", path.display());
        }
        return Ok(token);
    }
    let Some(issuer) = &q.issuer_url else {
        bail!(
            "no token: pass --issuer-url (after `gatehouse login`) or --token-file with an ID token"
        );
    };
    let issuer = issuer.trim_end_matches('/');
    let cache = cache::TokenCache::new(cache::default_dir()?);
    let client =
        || http::IssuerClient::new(q.issuer_ca_file.as_deref()).map_err(oidc::OidcError::from);
    match fresh_tokens(
        &cache,
        issuer,
        &q.client_id,
        chrono::Duration::seconds(EXPIRY_SKEW_SECS),
        client,
    )
    .await
    {
        Ok(t) => Ok(t.id_token),
        Err(e @ TokenError::Cache(_)) => bail!("{e}"),
        Err(e) => bail!(
            "{e}: run `gatehouse login --issuer-url {issuer} --client-id {}`",
            q.client_id
        ),
    }
}

async fn query_client(
    q: &QueryArgs,
) -> anyhow::Result<gatehouse_collector::cli::audit::QueryClient> {
    let token = query_token(q).await?;
    Ok(gatehouse_collector::cli::audit::QueryClient::new(
        &q.collector_url,
        q.ca_file.as_deref(),
        token,
    )?)
}

/// Prints a list endpoint's results in the chosen format (following cursors with --all).
async fn print_list<T>(
    q: &QueryArgs,
    list: &ListArgs,
    path: &str,
    mut params: Vec<(&str, Option<String>)>,
    render: fn(&[T]) -> String,
) -> anyhow::Result<()>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    use gatehouse_collector::cli::audit::{PageJson, with_query};
    use std::io::Write;
    let client = query_client(q).await?;
    params.push(("since", list.since.clone()));
    params.push(("until", list.until.clone()));
    params.push(("limit", list.limit.map(|n| n.to_string())));
    let mut out = std::io::stdout().lock();
    if q.output == Output::Ndjson {
        client
            .stream_to(&with_query(path, &params), &mut out)
            .await?;
        return Ok(());
    }
    let mut items: Vec<T> = Vec::new();
    let mut cursor: Option<String> = None;
    let next = loop {
        let mut p = params.clone();
        p.push(("cursor", cursor.clone()));
        let page: PageJson<T> = client.get(&with_query(path, &p)).await?;
        items.extend(page.items);
        match page.next {
            Some(next) if list.all => cursor = Some(next),
            next => break next,
        }
    };
    match q.output {
        Output::Json => {
            let doc = serde_json::json!({ "items": items, "next": next });
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        }
        _ => {
            write!(out, "{}", render(&items))?;
            if next.is_some() {
                eprintln!("(more results: add --all, or narrow the search)");
            }
        }
    }
    Ok(())
}

async fn audit_search(a: &AuditSearchArgs) -> anyhow::Result<()> {
    let params = vec![
        ("user", a.user.clone()),
        ("group", a.group.clone()),
        ("verb", a.verb.clone()),
        ("resource", a.resource.clone()),
        ("namespace", a.namespace.clone()),
        ("name", a.name.clone()),
        ("decision", a.decision.clone()),
        ("status", a.status.map(|s| s.to_string())),
        ("session", a.session.clone()),
    ];
    print_list(
        &a.query,
        &a.list,
        "/v1/audit/requests",
        params,
        gatehouse_collector::cli::audit::requests_table,
    )
    .await
}

async fn sessions_list(a: &SessionListArgs) -> anyhow::Result<()> {
    let params = vec![
        ("user", a.user.clone()),
        ("namespace", a.namespace.clone()),
        ("pod", a.pod.clone()),
        ("kind", a.kind.clone()),
    ];
    print_list(
        &a.query,
        &a.list,
        "/v1/sessions",
        params,
        gatehouse_collector::cli::audit::sessions_table,
    )
    .await
}

async fn sessions_replay(a: &SessionReplayArgs) -> anyhow::Result<()> {
    use gatehouse_collector::cli::replay;
    let client = query_client(&a.query).await?;
    let id: String = form_urlencoded::byte_serialize(a.id.as_bytes()).collect();
    let cast = client
        .get_text(&format!("/v1/sessions/{id}/recording"))
        .await?;
    if let Some(path) = &a.output_file {
        std::fs::write(path, &cast)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        eprintln!(
            "saved the recording of session {} to {}",
            a.id,
            path.display()
        );
        return Ok(());
    }
    let info = replay::info(&cast)?;
    if !a.raw {
        eprintln!(
            "replaying session {} ({}, {}x{}) at {}x speed; Ctrl-C stops",
            a.id, info.title, info.width, info.height, a.speed
        );
    }
    let options = replay::PlayOptions {
        speed: a.speed,
        max_wait: a
            .max_wait
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(std::time::Duration::from_secs_f64),
        raw: a.raw,
    };
    // Blocking writes and sleeps: the replay is the only thing this process does.
    tokio::task::spawn_blocking(move || {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        replay::play(&cast, options, &mut out, std::thread::sleep)
    })
    .await??;
    Ok(())
}

async fn sessions_show(a: &SessionShowArgs) -> anyhow::Result<()> {
    use gatehouse_collector::store::query::SessionDetail;
    let client = query_client(&a.query).await?;
    let id: String = form_urlencoded::byte_serialize(a.id.as_bytes()).collect();
    let detail: SessionDetail = client.get(&format!("/v1/sessions/{id}")).await?;
    match a.query.output {
        Output::Table => print!("{}", gatehouse_collector::cli::audit::session_text(&detail)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&detail)?),
        Output::Ndjson => println!("{}", serde_json::to_string(&detail)?),
    }
    Ok(())
}
