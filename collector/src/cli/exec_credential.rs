//! kubectl `exec` credential plugin protocol: read `KUBERNETES_EXEC_INFO`, answer an `ExecCredential`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;

/// `client.authentication.k8s.io/v1` (kubectl >= 1.22).
pub const V1: &str = "client.authentication.k8s.io/v1";
/// `client.authentication.k8s.io/v1beta1` (kubectl 1.11 - today; the only one 1.20 speaks).
pub const V1BETA1: &str = "client.authentication.k8s.io/v1beta1";

/// Errors understanding what kubectl asked for.
#[derive(Debug, thiserror::Error)]
pub enum ExecInfoError {
    /// `KUBERNETES_EXEC_INFO` is not JSON of the ExecCredential shape.
    #[error("KUBERNETES_EXEC_INFO is not a valid ExecCredential: {0}")]
    Invalid(String),
    /// kubectl asked for an apiVersion this plugin does not speak.
    #[error(
        "kubectl asked for unsupported exec credential apiVersion {0:?} (supported: {V1}, {V1BETA1})"
    )]
    UnsupportedVersion(String),
}

/// What kubectl told the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecInfo {
    /// apiVersion to answer in.
    pub api_version: &'static str,
    /// Whether kubectl lets the plugin use the terminal (stdin) for a login.
    pub interactive: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawInfo {
    api_version: String,
    #[serde(default)]
    spec: RawSpec,
}

#[derive(Deserialize, Default)]
struct RawSpec {
    #[serde(default)]
    interactive: bool,
}

/// Parse `KUBERNETES_EXEC_INFO`. When kubectl did not set it (old kubectl, or a manual run),
/// answer `fallback_version` and treat stdin's terminal-ness as the interactive bit.
pub fn parse_exec_info(
    env: Option<&str>,
    fallback_version: &'static str,
    stdin_is_terminal: bool,
) -> Result<ExecInfo, ExecInfoError> {
    let Some(raw) = env.filter(|s| !s.trim().is_empty()) else {
        return Ok(ExecInfo {
            api_version: fallback_version,
            interactive: stdin_is_terminal,
        });
    };
    let info: RawInfo =
        serde_json::from_str(raw).map_err(|e| ExecInfoError::Invalid(e.to_string()))?;
    let api_version = match info.api_version.as_str() {
        V1 => V1,
        V1BETA1 => V1BETA1,
        other => return Err(ExecInfoError::UnsupportedVersion(other.to_string())),
    };
    Ok(ExecInfo {
        api_version,
        interactive: info.spec.interactive,
    })
}

/// The JSON kubectl reads from the plugin's stdout.
pub fn render(api_version: &str, token: &str, expires_at: DateTime<Utc>) -> String {
    serde_json::json!({
        "kind": "ExecCredential",
        "apiVersion": api_version,
        "spec": {},
        "status": {
            "token": token,
            // kubectl wants RFC 3339; whole seconds keep 1.20's parser happy.
            "expirationTimestamp": expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        }
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_in_the_version_kubectl_asked_for() -> anyhow::Result<()> {
        let v1 = r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":true}}"#;
        assert_eq!(
            parse_exec_info(Some(v1), V1BETA1, false)?,
            ExecInfo {
                api_version: V1,
                interactive: true
            }
        );
        let b1 = r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1","spec":{}}"#;
        assert_eq!(
            parse_exec_info(Some(b1), V1, true)?,
            ExecInfo {
                api_version: V1BETA1,
                interactive: false
            }
        );
        Ok(())
    }

    #[test]
    fn missing_info_uses_fallback_and_terminal() -> anyhow::Result<()> {
        assert_eq!(
            parse_exec_info(None, V1BETA1, true)?,
            ExecInfo {
                api_version: V1BETA1,
                interactive: true
            }
        );
        Ok(())
    }

    #[test]
    fn bad_info_is_refused() {
        assert!(matches!(
            parse_exec_info(Some("nope"), V1, false),
            Err(ExecInfoError::Invalid(_))
        ));
        let a = r#"{"apiVersion":"client.authentication.k8s.io/v1alpha1"}"#;
        assert!(matches!(
            parse_exec_info(Some(a), V1, false),
            Err(ExecInfoError::UnsupportedVersion(_))
        ));
    }

    #[test]
    fn render_has_token_and_rfc3339_expiry() -> anyhow::Result<()> {
        let at = DateTime::parse_from_rfc3339("2026-12-03T09:30:00Z")?.with_timezone(&Utc);
        let v: serde_json::Value = serde_json::from_str(&render(V1, "tok", at))?;
        assert_eq!(v["kind"], "ExecCredential");
        assert_eq!(v["apiVersion"], V1);
        assert_eq!(v["status"]["token"], "tok");
        assert_eq!(v["status"]["expirationTimestamp"], "2026-12-03T09:30:00Z");
        Ok(())
    }
}
