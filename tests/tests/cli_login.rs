//! End to end for `gatehouse login`: the real `gatehouse` binary logs in to the test OIDC
//! issuer (loopback redirect with PKCE, or the device flow), `gatehouse kubeconfig` writes
//! an exec-plugin user, and real kubectl 1.32 and 1.20 reach the emulator through the real
//! agent as the logged-in user; expired ID tokens are refreshed, revoked ones are not.
//!
//! Needs the binaries: `cargo build -p gatehouse-agent -p gatehouse-collector --bins`.
//! The test plays the browser: it reads the login URL `gatehouse login --no-browser`
//! prints, GETs it from the issuer (which auto-approves its login user) and follows the
//! 302 to the CLI's loopback listener.

use bytes::Bytes;
use gatehouse_tests::harness::kubectl::Kubectl;
use gatehouse_tests::harness::stack::{Stack, StackOptions, dev_users, find_bin_dir};
use gatehouse_tests::harness::tools;
use gatehouse_tests::oidc::OidcIssuer;
use gatehouse_tests::pki::Ca;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Longest any one `gatehouse` invocation may take in these tests.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

// --- the `gatehouse` CLI, with its own token cache ---

struct Cli {
    bin: PathBuf,
    cache: tempfile::TempDir,
    issuer: String,
    ca: PathBuf,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Cli {
    fn new(issuer: &str, ca: &Path) -> anyhow::Result<Self> {
        let bin = find_bin_dir()?.join("gatehouse");
        anyhow::ensure!(
            bin.is_file(),
            "{} missing: cargo build -p gatehouse-collector --bins",
            bin.display()
        );
        Ok(Self {
            bin,
            cache: tempfile::tempdir()?,
            issuer: issuer.into(),
            ca: ca.into(),
        })
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.cache.path())
            .env("XDG_CACHE_HOME", self.cache.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    fn issuer_args(&self) -> Vec<String> {
        vec![
            format!("--issuer-url={}", self.issuer),
            format!("--issuer-ca-file={}", self.ca.display()),
        ]
    }

    async fn run(&self, args: &[&str]) -> anyhow::Result<Out> {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(self.issuer_args());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = tokio::time::timeout(CLI_TIMEOUT, self.command(&refs).output())
            .await
            .map_err(|_| anyhow::anyhow!("gatehouse {args:?} did not finish"))??;
        Ok(Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// `gatehouse token`'s ID token (fails unless it exits 0).
    async fn token(&self) -> anyhow::Result<String> {
        let out = self.run(&["token"]).await?;
        anyhow::ensure!(out.code == 0, "gatehouse token failed: {}", out.stderr);
        let v: Value = serde_json::from_str(&out.stdout)?;
        Ok(v["status"]["token"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Starts `gatehouse login <extra>` and returns it with its stderr lines.
    fn spawn_login(&self, extra: &[&str]) -> anyhow::Result<Login> {
        let mut all = vec!["login".to_string()];
        all.extend(self.issuer_args());
        all.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut child = self.command(&refs).spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stderr pipe"))?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Login {
            child,
            lines: rx,
            seen: Vec::new(),
        })
    }

    /// Runs `gatehouse kubeconfig` writing `path` for the agent, with the exec `version`.
    async fn kubeconfig(&self, path: &Path, agent: &str, version: &str) -> anyhow::Result<()> {
        let kubectl = tools::kubectl_1_32().map_err(anyhow::Error::msg)?;
        let (kc, ca, kctl) = (
            format!("--kubeconfig={}", path.display()),
            format!("--ca-file={}", self.ca.display()),
            format!("--kubectl={}", kubectl.display()),
        );
        let out = self
            .run(&[
                "kubeconfig",
                &kc,
                &format!("--server={agent}"),
                &ca,
                &kctl,
                &format!("--exec-api-version={version}"),
            ])
            .await?;
        anyhow::ensure!(out.code == 0, "gatehouse kubeconfig failed: {}", out.stderr);
        Ok(())
    }
}

struct Login {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Login {
    /// The first stderr line `pick` accepts (mapped).
    async fn line<T>(&mut self, pick: impl Fn(&str) -> Option<T>) -> anyhow::Result<T> {
        let wait = async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line.clone());
                if let Some(t) = pick(&line) {
                    return Some(t);
                }
            }
            None
        };
        match tokio::time::timeout(CLI_TIMEOUT, wait).await {
            Ok(Some(t)) => Ok(t),
            _ => anyhow::bail!("expected line not printed; stderr so far: {:?}", self.seen),
        }
    }

    /// The authorization URL `--no-browser` prints.
    async fn authorize_url(&mut self) -> anyhow::Result<String> {
        self.line(|l| {
            let l = l.trim();
            (l.starts_with("https://") && l.contains("/authorize?")).then(|| l.to_string())
        })
        .await
    }

    /// Exit code and the whole stderr.
    async fn finish(mut self) -> anyhow::Result<(i32, String)> {
        let status = tokio::time::timeout(CLI_TIMEOUT, self.child.wait())
            .await
            .map_err(|_| anyhow::anyhow!("gatehouse login did not exit: {:?}", self.seen))??;
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(5), self.lines.recv()).await
        {
            self.seen.push(line);
        }
        Ok((status.code().unwrap_or(-1), self.seen.join("\n")))
    }
}

// --- playing the browser ---

type Browser = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

fn browser(ca: &Ca) -> anyhow::Result<Browser> {
    let tls = gatehouse_tests::pki::client_config_trusting(&ca.cert_pem())?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

async fn send(
    b: &Browser,
    method: http::Method,
    url: &str,
    form: Option<String>,
) -> anyhow::Result<(http::StatusCode, http::HeaderMap, String)> {
    let mut req = http::Request::builder().method(method).uri(url);
    if form.is_some() {
        req = req.header("content-type", "application/x-www-form-urlencoded");
    }
    let req = req.body(Full::new(Bytes::from(form.unwrap_or_default())))?;
    let resp = tokio::time::timeout(CLI_TIMEOUT, b.request(req)).await??;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// GETs the authorization URL and returns the redirect target (`Location`).
async fn authorize(b: &Browser, url: &str) -> anyhow::Result<url::Url> {
    let (status, headers, body) = send(b, http::Method::GET, url, None).await?;
    anyhow::ensure!(status == 302, "authorize answered {status}: {body}");
    let location = headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow::anyhow!("302 without Location"))?;
    Ok(url::Url::parse(location)?)
}

/// Full browser login: issuer, then the loopback redirect; returns the callback's status.
async fn browse_login(b: &Browser, login: &mut Login) -> anyhow::Result<http::StatusCode> {
    let url = login.authorize_url().await?;
    let redirect = authorize(b, &url).await?;
    Ok(send(b, http::Method::GET, redirect.as_str(), None).await?.0)
}

fn with_param(mut url: url::Url, name: &str, value: &str) -> url::Url {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .map(|(k, v)| if k == name { (k, value.into()) } else { (k, v) })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url
}

fn claims(jwt: &str) -> anyhow::Result<Value> {
    Ok(jsonwebtoken::dangerous::insecure_decode_claims::<Value>(
        jwt,
    )?)
}

// --- set-ups ---

/// An issuer alone (no agent) with its CA written to disk.
async fn issuer_only() -> anyhow::Result<(tempfile::TempDir, Ca, OidcIssuer, Cli)> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("cli-login-test")?;
    let ca_path = dir.path().join("ca.crt");
    ca.write_cert(&ca_path)?;
    let issuer = OidcIssuer::start(dev_users(), &ca).await?;
    let cli = Cli::new(issuer.issuer_url(), &ca_path)?;
    Ok((dir, ca, issuer, cli))
}

async fn stack() -> anyhow::Result<(tempfile::TempDir, Stack, Cli)> {
    let dir = tempfile::tempdir()?;
    let stack = Stack::start(StackOptions::new(dir.path())).await?;
    let cli = Cli::new(stack.issuer.issuer_url(), stack.ca_cert_path())?;
    Ok((dir, stack, cli))
}

/// The stack's CA (it signs the issuer too), for the test's browser.
fn stack_browser(stack: &Stack) -> anyhow::Result<Browser> {
    let pem = std::fs::read_to_string(stack.ca_cert_path())?;
    let tls = gatehouse_tests::pki::client_config_trusting(&pem)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

async fn loopback_login(cli: &Cli, b: &Browser) -> anyhow::Result<()> {
    let mut login = cli.spawn_login(&["--no-browser"])?;
    let callback = browse_login(b, &mut login).await?;
    let (code, stderr) = login.finish().await?;
    anyhow::ensure!(
        code == 0 && callback == 200,
        "login failed ({code}, callback {callback}): {stderr}"
    );
    Ok(())
}

/// A pod list through the agent by `kubectl`, then the emulator's record of it.
async fn list_pods_as(stack: &Stack, kubectl: &Kubectl, user: &str) -> anyhow::Result<()> {
    let before = stack.emulator.request_log().len();
    let out = kubectl.run(&["get", "pods", "-n", "dev"]).await?.ok()?;
    assert!(out.stdout.contains("web-"), "{}", out.stdout);
    let log = stack.emulator.request_log();
    let list = log[before..]
        .iter()
        .find(|r| r.path == "/api/v1/namespaces/dev/pods" && r.verb == "list")
        .ok_or_else(|| anyhow::anyhow!("no pod list in the emulator's log"))?;
    assert_eq!(list.impersonated_user.as_deref(), Some(user), "{list:?}");
    assert_eq!(list.code, 200);
    Ok(())
}

// --- tests ---

#[tokio::test]
async fn loopback_login_then_kubectl_1_32_and_1_20_through_the_agent() -> anyhow::Result<()> {
    let (dir, stack, cli) = stack().await?;
    let b = stack_browser(&stack)?;
    stack.issuer.set_login_user(Some("bob"));
    loopback_login(&cli, &b).await?;
    assert_eq!(claims(&cli.token().await?)?["sub"], "bob");

    let kc_v1 = dir.path().join("kubeconfig-v1");
    cli.kubeconfig(&kc_v1, stack.agent_url(), "v1").await?;
    let cache = cli.cache.path().display().to_string();
    let k132 = Kubectl::v1_32(&kc_v1)?.with_env("XDG_CACHE_HOME", &cache);
    list_pods_as(&stack, &k132, "bob").await?;

    let kc_beta = dir.path().join("kubeconfig-v1beta1");
    cli.kubeconfig(&kc_beta, stack.agent_url(), "v1beta1")
        .await?;
    let k120 = Kubectl::v1_20(&kc_beta)?.with_env("XDG_CACHE_HOME", &cache);
    list_pods_as(&stack, &k120, "bob").await?;
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn expired_id_token_is_refreshed_transparently_through_kubectl() -> anyhow::Result<()> {
    let (dir, stack, cli) = stack().await?;
    let b = stack_browser(&stack)?;
    // Under `gatehouse token`'s 30 s skew: every ID token from now on counts as expiring.
    stack.issuer.set_login_token_ttl(Duration::from_secs(10));
    loopback_login(&cli, &b).await?;
    let first = claims(&cli.token().await?)?;
    assert_eq!(stack.issuer.refreshes_served(), 1);

    let kc = dir.path().join("kubeconfig");
    cli.kubeconfig(&kc, stack.agent_url(), "v1").await?;
    let cache = cli.cache.path().display().to_string();
    let kubectl = Kubectl::v1_32(&kc)?.with_env("XDG_CACHE_HOME", &cache);
    list_pods_as(&stack, &kubectl, "alice").await?;
    assert!(stack.issuer.refreshes_served() >= 2);
    assert_eq!(first["sub"], "alice");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn revoked_refresh_token_tells_kubectl_users_to_log_in() -> anyhow::Result<()> {
    let (dir, stack, cli) = stack().await?;
    let b = stack_browser(&stack)?;
    stack.issuer.set_login_token_ttl(Duration::from_secs(10));
    loopback_login(&cli, &b).await?;
    stack.issuer.revoke_all_refresh_tokens();
    let direct = cli.run(&["token"]).await?;
    assert_ne!(direct.code, 0);
    assert!(
        direct.stderr.contains("refused to renew")
            && direct.stderr.contains("refresh token is revoked"),
        "{}",
        direct.stderr
    );

    let kc = dir.path().join("kubeconfig");
    cli.kubeconfig(&kc, stack.agent_url(), "v1").await?;
    let cache = cli.cache.path().display().to_string();
    let kubectl = Kubectl::v1_32(&kc)?.with_env("XDG_CACHE_HOME", &cache);
    let before = stack.emulator.request_log().len();
    let out = kubectl.run(&["get", "pods", "-n", "dev"]).await?;
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr.contains("has expired")
            && out.stderr.contains("run `gatehouse login --issuer-url"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("eyJ"),
        "a token leaked: {}",
        out.stderr
    );
    assert_eq!(
        stack.emulator.request_log().len(),
        before,
        "nothing reached the cluster"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn device_login_approved_at_the_issuer() -> anyhow::Result<()> {
    let (_dir, ca, issuer, cli) = issuer_only().await?;
    let b = browser(&ca)?;
    issuer.set_device_timing(Duration::from_secs(1), Duration::from_secs(120));
    let mut login = cli.spawn_login(&["--device"])?;
    let (uri, code) = login
        .line(|l| {
            let rest = l.split(" open ").nth(1)?;
            let (uri, code) = rest.split_once(" and enter the code: ")?;
            Some((uri.to_string(), code.trim().to_string()))
        })
        .await?;
    assert_eq!(uri, format!("{}/device", issuer.issuer_url()));
    let form = format!("user_code={code}&action=approve&user=carol");
    let (status, _, body) = send(&b, http::Method::POST, &uri, Some(form)).await?;
    assert_eq!(status, 200, "{body}");
    let (exit, stderr) = login.finish().await?;
    assert_eq!(exit, 0, "{stderr}");
    let c = claims(&cli.token().await?)?;
    assert_eq!(c["sub"], "carol");
    assert_eq!(c["groups"], serde_json::json!(["security"]));
    Ok(())
}

#[tokio::test]
async fn device_login_honours_slow_down() -> anyhow::Result<()> {
    let (_dir, ca, issuer, cli) = issuer_only().await?;
    let b = browser(&ca)?;
    issuer.set_device_timing(Duration::from_secs(1), Duration::from_secs(120));
    // One slow_down: the CLI must add 5 s and keep polling, not give up.
    issuer.slow_down_next_polls(1);
    let mut login = cli.spawn_login(&["--device"])?;
    let code = login
        .line(|l| Some(l.split_once("enter the code: ")?.1.trim().to_string()))
        .await?;
    let form = format!("user_code={code}");
    let uri = format!("{}/device", issuer.issuer_url());
    assert_eq!(send(&b, http::Method::POST, &uri, Some(form)).await?.0, 200);
    let (exit, stderr) = login.finish().await?;
    assert_eq!(exit, 0, "{stderr}");
    assert_eq!(claims(&cli.token().await?)?["sub"], "alice");
    Ok(())
}

#[tokio::test]
async fn device_login_denied_or_expired_fails_clearly() -> anyhow::Result<()> {
    let (_dir, ca, issuer, cli) = issuer_only().await?;
    let b = browser(&ca)?;
    issuer.set_device_timing(Duration::from_secs(1), Duration::from_secs(120));
    let mut login = cli.spawn_login(&["--device"])?;
    let code = login
        .line(|l| Some(l.split_once("enter the code: ")?.1.trim().to_string()))
        .await?;
    let uri = format!("{}/device", issuer.issuer_url());
    let form = format!("user_code={code}&action=deny");
    assert_eq!(send(&b, http::Method::POST, &uri, Some(form)).await?.0, 200);
    let (exit, stderr) = login.finish().await?;
    assert_ne!(exit, 0);
    assert!(stderr.contains("denied"), "{stderr}");

    // Never approved: the code runs out (2 s) and the CLI says so.
    issuer.set_device_timing(Duration::from_secs(1), Duration::from_secs(2));
    let (exit, stderr) = cli.spawn_login(&["--device"])?.finish().await?;
    assert_ne!(exit, 0);
    assert!(stderr.contains("expired"), "{stderr}");
    assert!(cli.run(&["token"]).await?.code != 0, "nothing was cached");
    Ok(())
}

#[tokio::test]
async fn forged_state_is_refused_by_the_cli() -> anyhow::Result<()> {
    let (_dir, ca, _issuer, cli) = issuer_only().await?;
    let b = browser(&ca)?;
    let mut login = cli.spawn_login(&["--no-browser"])?;
    let url = login.authorize_url().await?;
    let redirect = with_param(authorize(&b, &url).await?, "state", "forged");
    let (status, _, page) = send(&b, http::Method::GET, redirect.as_str(), None).await?;
    assert_eq!(status, 400, "{page}");
    let (exit, stderr) = login.finish().await?;
    assert_ne!(exit, 0);
    assert!(stderr.contains("state does not match"), "{stderr}");
    let token = cli.run(&["token"]).await?;
    assert_ne!(token.code, 0);
    assert!(token.stderr.contains("not logged in"), "{}", token.stderr);
    Ok(())
}

#[tokio::test]
async fn issuer_refuses_wrong_verifier_reused_code_and_bad_requests() -> anyhow::Result<()> {
    use base64::Engine as _;
    let (_dir, ca, issuer, _cli) = issuer_only().await?;
    let b = browser(&ca)?;
    let base = issuer.issuer_url().to_string();
    let verifier = "a".repeat(43);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(<sha2::Sha256 as sha2::Digest>::digest(verifier.as_bytes()));
    let redirect = "http://127.0.0.1:9/callback";
    let authorize_url = |challenge: &str, redirect: &str, client: &str| {
        format!(
            "{base}/authorize?response_type=code&client_id={}&redirect_uri={}&state=s1&code_challenge={}&code_challenge_method=S256",
            percent(client),
            percent(redirect),
            percent(challenge)
        )
    };
    let code_of = |u: &url::Url| {
        u.query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let redeem = |code: String, verifier: String| {
        let b = b.clone();
        let token_url = format!("{base}/token");
        async move {
            let form = format!(
                "grant_type=authorization_code&client_id=gatehouse&redirect_uri={}&code={code}&code_verifier={verifier}",
                percent(redirect)
            );
            send(&b, http::Method::POST, &token_url, Some(form)).await
        }
    };

    // Wrong verifier: refused, and the code is spent.
    let loc = authorize(&b, &authorize_url(&challenge, redirect, "gatehouse")).await?;
    assert_eq!(
        loc.query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned()),
        Some("s1".into())
    );
    let code = code_of(&loc);
    let (status, _, body) = redeem(code.clone(), "b".repeat(43)).await?;
    assert_eq!(status, 400);
    assert!(body.contains("invalid_grant"), "{body}");
    let (status, _, body) = redeem(code, verifier.clone()).await?;
    assert_eq!(status, 400, "{body}");

    // Right verifier once, then the same code again.
    let code = code_of(&authorize(&b, &authorize_url(&challenge, redirect, "gatehouse")).await?);
    let (status, _, body) = redeem(code.clone(), verifier.clone()).await?;
    assert_eq!(status, 200, "{body}");
    let tokens: Value = serde_json::from_str(&body)?;
    assert!(tokens["refresh_token"].is_string());
    let (status, _, body) = redeem(code, verifier.clone()).await?;
    assert_eq!(status, 400);
    assert!(body.contains("already used"), "{body}");

    // No PKCE: redirected back with invalid_request.
    let no_pkce = authorize_url("", redirect, "gatehouse");
    let loc = authorize(&b, &no_pkce).await?;
    assert!(
        loc.query_pairs()
            .any(|(k, v)| k == "error" && v == "invalid_request"),
        "{loc}"
    );
    // Non-loopback redirect URI or unknown client: an error page, never a redirect.
    for bad in [
        authorize_url(&challenge, "https://evil.example/cb", "gatehouse"),
        authorize_url(&challenge, redirect, "someone-else"),
    ] {
        let (status, headers, _) = send(&b, http::Method::GET, &bad, None).await?;
        assert_eq!(status, 400);
        assert!(headers.get("location").is_none());
    }

    // Token endpoint and /device refuse what they do not know, as OAuth errors.
    let token_url = format!("{base}/token");
    for (form, error) in [
        (
            "grant_type=refresh_token&client_id=gatehouse&refresh_token=nope",
            "invalid_grant",
        ),
        (
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&client_id=gatehouse&device_code=nope",
            "invalid_grant",
        ),
        (
            "grant_type=refresh_token&client_id=other&refresh_token=nope",
            "invalid_client",
        ),
        (
            "grant_type=client_credentials&client_id=gatehouse",
            "unsupported_grant_type",
        ),
    ] {
        let (status, _, body) = send(&b, http::Method::POST, &token_url, Some(form.into())).await?;
        assert!(status.is_client_error(), "{form}: {status}");
        let v: Value = serde_json::from_str(&body)?;
        assert_eq!(v["error"], error, "{form}: {body}");
    }
    let device = format!("{base}/device");
    let (status, _, body) = send(
        &b,
        http::Method::POST,
        &device,
        Some("user_code=BCDF-GHJK".into()),
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = send(
        &b,
        http::Method::POST,
        &device,
        Some("user_code=x&action=maybe".into()),
    )
    .await?;
    assert_eq!(status, 400);
    Ok(())
}

fn percent(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn concurrent_token_calls_refresh_once() -> anyhow::Result<()> {
    let (_dir, ca, issuer, cli) = issuer_only().await?;
    let b = browser(&ca)?;
    issuer.set_login_token_ttl(Duration::from_secs(10));
    loopback_login(&cli, &b).await?;
    // The refreshed token is long-lived, so whoever refreshes first serves all the others.
    issuer.set_login_token_ttl(Duration::from_secs(3600));
    let cli = std::sync::Arc::new(cli);
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let cli = cli.clone();
            tokio::spawn(async move { cli.token().await })
        })
        .collect();
    let mut tokens = Vec::new();
    for call in calls {
        tokens.push(call.await??);
    }
    assert_eq!(issuer.refreshes_served(), 1);
    assert!(
        tokens.windows(2).all(|w| w[0] == w[1]),
        "all got the one refreshed token"
    );
    Ok(())
}
