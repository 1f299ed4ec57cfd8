//! Kubeconfig exec credential plugins (`users[].user.exec`), as kubectl runs them: the
//! command gets `KUBERNETES_EXEC_INFO`, prints an `ExecCredential` (v1 or v1beta1), and its
//! token is cached until shortly before `expirationTimestamp`. One plugin instance per
//! distinct configuration is shared process-wide (like client-go's cache), so the forwarder
//! and the readiness probe don't each run it.

use super::credential::{CredentialError, UpstreamCredential, bearer};
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use http::HeaderValue;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

/// The ExecCredential API versions kubectl still speaks.
pub const SUPPORTED_API_VERSIONS: &[&str] = &[
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
];

/// Most time a plugin run may take (EKS/GKE helpers answer in well under a second).
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);
/// A token is renewed this long before it expires, so no request carries a stale one.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// After a 401, the plugin runs again only if its token is at least this old, so a
/// plugin that keeps handing out a refused token is not run on every request.
const RERUN_AFTER_REJECT: Duration = Duration::from_secs(5);
/// Most of the plugin's stderr quoted in an error.
const STDERR_QUOTE: usize = 300;

/// What to run, from the kubeconfig (paths already resolved).
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct ExecSpec {
    /// `client.authentication.k8s.io/v1` or `/v1beta1`.
    pub api_version: String,
    /// Program (a bare name is looked up in `PATH`).
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables, on top of the agent's own.
    pub env: Vec<(String, String)>,
    /// `spec.cluster` of `KUBERNETES_EXEC_INFO` when `provideClusterInfo: true`.
    pub cluster: Option<serde_json::Value>,
}

impl std::fmt::Debug for ExecSpec {
    // Env values may be secrets (cloud keys): only their names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSpec")
            .field("api_version", &self.api_version)
            .field("command", &self.command)
            .field("args", &self.args)
            .field(
                "env",
                &self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl ExecSpec {
    /// Checks what can be checked before running: a known API version and a command.
    pub fn validate(&self) -> Result<(), String> {
        if !SUPPORTED_API_VERSIONS.contains(&self.api_version.as_str()) {
            return Err(format!(
                "exec apiVersion {:?} is not supported (use one of {})",
                self.api_version,
                SUPPORTED_API_VERSIONS.join(", ")
            ));
        }
        if self.command.trim().is_empty() {
            return Err("exec has no command".into());
        }
        Ok(())
    }

    fn exec_info(&self) -> String {
        let mut spec = serde_json::json!({ "interactive": false });
        if let Some(cluster) = &self.cluster {
            spec["cluster"] = cluster.clone();
        }
        serde_json::json!({
            "apiVersion": self.api_version,
            "kind": "ExecCredential",
            "spec": spec,
        })
        .to_string()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecCredentialOut {
    api_version: Option<String>,
    kind: Option<String>,
    status: Option<ExecStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecStatus {
    token: Option<String>,
    expiration_timestamp: Option<String>,
    client_certificate_data: Option<String>,
}

struct Cached {
    header: HeaderValue,
    /// `None`: no expiry given, used until the API server refuses it (as kubectl does).
    refresh_at: Option<DateTime<Utc>>,
    fetched: std::time::Instant,
}

/// An exec plugin with its cached token.
pub struct ExecPlugin {
    spec: ExecSpec,
    cached: tokio::sync::Mutex<Option<Cached>>,
    runs: AtomicU64,
    rerun_after_reject: Duration,
}

static SHARED: LazyLock<Mutex<HashMap<String, Weak<ExecPlugin>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

impl ExecPlugin {
    /// The process-wide plugin for `spec` (created on first use).
    pub fn shared(spec: ExecSpec) -> Arc<ExecPlugin> {
        let key = serde_json::to_string(&spec).unwrap_or_default();
        let mut map = match SHARED.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.retain(|_, weak| weak.strong_count() > 0);
        if let Some(existing) = map.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        let plugin = Arc::new(ExecPlugin::new(spec));
        map.insert(key, Arc::downgrade(&plugin));
        plugin
    }

    /// A plugin of its own (not shared).
    pub fn new(spec: ExecSpec) -> Self {
        Self {
            spec,
            cached: tokio::sync::Mutex::new(None),
            runs: AtomicU64::new(0),
            rerun_after_reject: RERUN_AFTER_REJECT,
        }
    }

    /// How often the command has run.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    fn error(&self, reason: impl Into<String>) -> CredentialError {
        CredentialError::Exec {
            command: self.spec.command.clone(),
            reason: reason.into(),
        }
    }

    async fn header(&self) -> Result<HeaderValue, CredentialError> {
        // Held across the run: concurrent requests at expiry wait for one run.
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && c.refresh_at.is_none_or(|at| Utc::now() < at)
        {
            return Ok(c.header.clone());
        }
        let fresh = self.run().await?;
        let header = fresh.header.clone();
        *cached = Some(fresh);
        Ok(header)
    }

    async fn run(&self) -> Result<Cached, CredentialError> {
        self.runs.fetch_add(1, Ordering::Relaxed);
        let mut command = tokio::process::Command::new(&self.spec.command);
        command
            .args(&self.spec.args)
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .env("KUBERNETES_EXEC_INFO", self.spec.exec_info())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|e| self.error(format!("cannot start it: {e}")))?;
        let output = tokio::time::timeout(EXEC_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| self.error(format!("did not finish within {EXEC_TIMEOUT:?}")))?
            .map_err(|e| self.error(format!("waiting for it: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let quote: String = stderr.trim().chars().take(STDERR_QUOTE).collect();
            return Err(self.error(format!("exited with {}: {quote}", output.status)));
        }
        let cached = self.parse(&output.stdout)?;
        tracing::info!(
            command = %self.spec.command,
            expires = ?cached.refresh_at,
            "exec credential plugin issued a new upstream token"
        );
        Ok(cached)
    }

    fn parse(&self, stdout: &[u8]) -> Result<Cached, CredentialError> {
        // serde's message names the position, not the text, so no token leaks into it.
        let out: ExecCredentialOut = serde_json::from_slice(stdout)
            .map_err(|e| self.error(format!("printed no ExecCredential JSON ({e})")))?;
        if out.kind.as_deref() != Some("ExecCredential") {
            return Err(self.error(format!("printed kind {:?}, not ExecCredential", out.kind)));
        }
        if out.api_version.as_deref() != Some(self.spec.api_version.as_str()) {
            return Err(self.error(format!(
                "printed apiVersion {:?}, but the kubeconfig asks for {:?}",
                out.api_version, self.spec.api_version
            )));
        }
        let status = out
            .status
            .ok_or_else(|| self.error("printed an ExecCredential without status"))?;
        let token = match status.token.filter(|t| !t.trim().is_empty()) {
            Some(token) => token,
            None if status.client_certificate_data.is_some() => {
                return Err(self.error(
                    "returned a client certificate; the agent supports tokens from exec plugins \
                     (use client-certificate/client-key files for mTLS)",
                ));
            }
            None => return Err(self.error("returned no token")),
        };
        let refresh_at = match status.expiration_timestamp {
            None => None,
            Some(text) => {
                let at = DateTime::parse_from_rfc3339(&text)
                    .map_err(|e| self.error(format!("bad expirationTimestamp {text:?}: {e}")))?
                    .with_timezone(&Utc);
                Some(refresh_time(at, Utc::now()))
            }
        };
        Ok(Cached {
            header: bearer(token.trim(), &format!("exec plugin {}", self.spec.command))?,
            refresh_at,
            fetched: std::time::Instant::now(),
        })
    }
}

/// When to renew a token that expires at `expires`: [`REFRESH_MARGIN`] early, but never
/// later than half its remaining life from `now` (so a short-lived token is not re-fetched
/// on every request, nor used past its end).
fn refresh_time(expires: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    let remaining = (expires - now).max(chrono::TimeDelta::zero());
    let margin = chrono::TimeDelta::from_std(REFRESH_MARGIN)
        .unwrap_or_default()
        .min(remaining / 2);
    expires - margin
}

impl UpstreamCredential for ExecPlugin {
    fn authorization(&self) -> BoxFuture<'_, Result<Option<HeaderValue>, CredentialError>> {
        Box::pin(async move { self.header().await.map(Some) })
    }

    fn describe(&self) -> String {
        format!("exec plugin {}", self.spec.command)
    }

    fn rejected(&self, sent: Option<&HeaderValue>) {
        // A run in progress is about to replace the token anyway.
        let Ok(mut cached) = self.cached.try_lock() else {
            return;
        };
        if let Some(c) = cached.as_mut()
            && Some(&c.header) == sent
            && c.fetched.elapsed() >= self.rerun_after_reject
        {
            tracing::warn!(command = %self.spec.command, "API server refused the exec plugin's token; it runs again for the next request");
            c.refresh_at = Some(Utc::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A plugin script that counts its runs in `<dir>/runs` and prints `body` (which sees
    /// `$KUBERNETES_EXEC_INFO`).
    fn script(dir: &std::path::Path, body: &str) -> std::io::Result<String> {
        let path = dir.join("plugin.sh");
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho run >> '{}/runs'\n{body}\n", dir.display()),
        )?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(path.display().to_string())
    }

    fn spec(command: String, version: &str) -> ExecSpec {
        ExecSpec {
            api_version: format!("client.authentication.k8s.io/{version}"),
            command,
            args: vec!["--flag".into()],
            env: vec![("PLUGIN_TOKEN".into(), "tok-from-env".into())],
            cluster: Some(serde_json::json!({"server": "https://k.example"})),
        }
    }

    fn runs(dir: &std::path::Path) -> usize {
        std::fs::read_to_string(dir.join("runs"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn token_is_cached_until_near_expiry() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let expires = (Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
        let cmd = script(
            dir.path(),
            &format!(
                r#"printf '{{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{{"token":"%s","expirationTimestamp":"{expires}"}}}}' "$PLUGIN_TOKEN""#
            ),
        )?;
        let plugin = ExecPlugin::new(spec(cmd, "v1"));
        for _ in 0..3 {
            let header = plugin.authorization().await?.ok_or("no header")?;
            assert_eq!(header, "Bearer tok-from-env");
        }
        assert_eq!(runs(dir.path()), 1);
        assert_eq!(plugin.runs(), 1);
        assert!(!plugin.describe().contains("tok-from-env"));
        let debug = format!("{:?}", plugin.spec);
        assert!(
            debug.contains("PLUGIN_TOKEN") && !debug.contains("tok-from-env"),
            "{debug}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn an_expired_token_is_fetched_again() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let cmd = script(
            dir.path(),
            r#"echo '{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"t","expirationTimestamp":"2000-01-01T00:00:00Z"}}'"#,
        )?;
        let plugin = ExecPlugin::new(spec(cmd, "v1beta1"));
        plugin.authorization().await?;
        plugin.authorization().await?;
        assert_eq!(runs(dir.path()), 2);
        Ok(())
    }

    #[tokio::test]
    async fn the_plugin_sees_exec_info() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        // Echo the exec info back as the token, minus characters a header can't hold.
        let cmd = script(
            dir.path(),
            r#"info=$(printf '%s' "$KUBERNETES_EXEC_INFO" | tr -d '"{}:, ')
echo "{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"$info\"}}""#,
        )?;
        let plugin = ExecPlugin::new(spec(cmd, "v1"));
        let header = plugin.authorization().await?.ok_or("no header")?;
        let text = header.to_str()?;
        assert!(text.contains("interactivefalse"), "{text}");
        assert!(text.contains("https//k.example"), "{text}");
        assert!(text.contains("kindExecCredential"), "{text}");
        Ok(())
    }

    #[tokio::test]
    async fn bad_plugin_output_is_a_clear_error() -> Result<(), Box<dyn std::error::Error>> {
        let cases = [
            ("echo 'not json secret-ish'", "no ExecCredential JSON"),
            (
                r#"echo '{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"t"}}'"#,
                "asks for",
            ),
            (
                r#"echo '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{}}'"#,
                "no token",
            ),
            (
                r#"echo '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"clientCertificateData":"x","clientKeyData":"y"}}'"#,
                "client certificate",
            ),
            ("echo oops >&2; exit 3", "oops"),
        ];
        for (body, want) in cases {
            let dir = tempfile::tempdir()?;
            let plugin = ExecPlugin::new(spec(script(dir.path(), body)?, "v1"));
            let err = plugin.authorization().await.err().ok_or("accepted")?;
            let text = err.to_string();
            assert!(text.contains(want), "{body}: {text}");
            assert!(!text.contains("secret-ish"), "{text}");
        }
        let plugin = ExecPlugin::new(spec("/nonexistent/plugin".into(), "v1"));
        let err = plugin.authorization().await.err().ok_or("accepted")?;
        assert!(err.to_string().contains("cannot start"), "{err}");
        Ok(())
    }

    #[tokio::test]
    async fn a_refused_token_is_renewed() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let cmd = script(
            dir.path(),
            r#"echo '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t"}}'"#,
        )?;
        let mut plugin = ExecPlugin::new(spec(cmd, "v1"));
        plugin.rerun_after_reject = Duration::ZERO;
        let first = plugin.authorization().await?;
        // A 401 for some other token (an older one) changes nothing.
        plugin.rejected(Some(&HeaderValue::from_static("Bearer old")));
        plugin.authorization().await?;
        assert_eq!(runs(dir.path()), 1);
        plugin.rejected(first.as_ref());
        plugin.authorization().await?;
        assert_eq!(runs(dir.path()), 2);
        // Within the re-run gap a 401 does not run the plugin again.
        plugin.rerun_after_reject = Duration::from_secs(3600);
        let second = plugin.authorization().await?;
        plugin.rejected(second.as_ref());
        plugin.authorization().await?;
        assert_eq!(runs(dir.path()), 2);
        Ok(())
    }

    #[test]
    fn shared_plugins_are_one_per_spec() {
        let a = ExecPlugin::shared(spec("/bin/a".into(), "v1"));
        let b = ExecPlugin::shared(spec("/bin/a".into(), "v1"));
        let c = ExecPlugin::shared(spec("/bin/c".into(), "v1"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn refresh_time_keeps_a_margin() {
        let now = Utc::now();
        let hour = now + chrono::TimeDelta::hours(1);
        assert_eq!(
            refresh_time(hour, now),
            hour - chrono::TimeDelta::seconds(60)
        );
        let soon = now + chrono::TimeDelta::seconds(20);
        assert_eq!(
            refresh_time(soon, now),
            now + chrono::TimeDelta::seconds(10)
        );
        assert!(spec("x".into(), "v1alpha1").validate().is_err());
        assert!(spec("x".into(), "v1").validate().is_ok());
    }
}
