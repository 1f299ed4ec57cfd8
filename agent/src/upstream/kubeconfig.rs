//! Reads a kubeconfig the way kubectl does for one context: the cluster's server and CA
//! (file or inline data) and the user's credential (token, tokenFile, client certificate
//! and key as files or inline data, or an exec plugin). Relative paths are resolved
//! against the kubeconfig's directory. Settings the agent cannot honour safely
//! (`insecure-skip-tls-verify`, auth providers, basic auth, `as`) stop the start with a
//! clear error instead of being ignored (`proxy-url` too, which it does not implement).

use super::UpstreamError;
use super::client_cert::{self, Pem, resolve_path};
use super::credential::{StaticToken, UpstreamCredential, WithClientCertificate};
use super::exec::{ExecPlugin, ExecSpec};
use super::token_file::TokenFile;
use base64::Engine;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A secret string whose `Debug` output is redacted.
#[derive(Clone, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The parts of a kubeconfig file the agent reads (everything else is ignored).
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeconfig {
    /// `clusters:`.
    pub clusters: Option<Vec<Named<Cluster>>>,
    /// `users:`.
    pub users: Option<Vec<NamedUser>>,
    /// `contexts:`.
    pub contexts: Option<Vec<NamedContext>>,
    /// `current-context:`.
    pub current_context: Option<String>,
}

/// A `clusters[]` entry.
#[derive(Debug, Deserialize)]
pub struct Named<T> {
    /// Its name.
    pub name: String,
    /// Its settings.
    pub cluster: Option<T>,
}

/// A `users[]` entry.
#[derive(Debug, Deserialize)]
pub struct NamedUser {
    /// Its name.
    pub name: String,
    /// Its settings.
    pub user: Option<AuthInfo>,
}

/// A `contexts[]` entry.
#[derive(Debug, Deserialize)]
pub struct NamedContext {
    /// Its name.
    pub name: String,
    /// Its settings.
    pub context: Option<ContextInfo>,
}

/// `clusters[].cluster`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    /// API server URL.
    pub server: Option<String>,
    /// CA file.
    pub certificate_authority: Option<String>,
    /// CA PEM, base64.
    pub certificate_authority_data: Option<String>,
    /// Refused: the agent always verifies the API server.
    pub insecure_skip_tls_verify: Option<bool>,
    /// Name to verify the server certificate against instead of the URL's host.
    pub tls_server_name: Option<String>,
    /// Not supported.
    pub proxy_url: Option<String>,
}

/// `contexts[].context`.
#[derive(Debug, Deserialize, Default)]
pub struct ContextInfo {
    /// Cluster name.
    pub cluster: Option<String>,
    /// User name.
    pub user: Option<String>,
}

/// `users[].user`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub struct AuthInfo {
    /// Bearer token.
    pub token: Option<Secret>,
    /// File holding the bearer token (re-read on change).
    #[serde(rename = "tokenFile")]
    pub token_file: Option<String>,
    /// Client certificate file.
    pub client_certificate: Option<String>,
    /// Client certificate PEM, base64.
    pub client_certificate_data: Option<String>,
    /// Client key file.
    pub client_key: Option<String>,
    /// Client key PEM, base64.
    pub client_key_data: Option<Secret>,
    /// Exec credential plugin.
    pub exec: Option<ExecConfig>,
    /// Refused (legacy auth providers).
    pub auth_provider: Option<serde::de::IgnoredAny>,
    /// Refused (basic auth).
    pub username: Option<String>,
    /// Refused (basic auth).
    pub password: Option<Secret>,
    /// Refused: the agent impersonates users itself.
    #[serde(rename = "as")]
    pub as_user: Option<String>,
    /// Refused, like `as`.
    pub as_groups: Option<Vec<String>>,
}

/// `users[].user.exec`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExecConfig {
    /// ExecCredential API version.
    pub api_version: Option<String>,
    /// Program.
    pub command: Option<String>,
    /// Arguments.
    pub args: Option<Vec<String>>,
    /// Extra environment.
    pub env: Option<Vec<ExecEnv>>,
    /// Pass the cluster (server, CA) in `KUBERNETES_EXEC_INFO`.
    #[serde(default)]
    pub provide_cluster_info: bool,
    /// `Never`, `IfAvailable` or `Always` (refused: the agent has no terminal).
    pub interactive_mode: Option<String>,
}

/// One `exec.env` entry.
#[derive(Debug, Deserialize)]
pub struct ExecEnv {
    /// Variable name.
    pub name: String,
    /// Its value.
    #[serde(default)]
    pub value: String,
}

/// The upstream one context describes.
pub struct Resolved {
    /// The context used.
    pub context: String,
    /// API server URL.
    pub url: String,
    /// CA; `None` = the Mozilla roots.
    pub ca: Option<Pem>,
    /// The agent's credential.
    pub credential: Arc<dyn UpstreamCredential>,
    /// `tls-server-name`, checked.
    pub tls_server_name: Option<rustls_pki_types::ServerName<'static>>,
}

/// Reads `path` and resolves `context` (or its current-context).
pub fn load(path: &Path, context: Option<&str>) -> Result<Resolved, UpstreamError> {
    let text = std::fs::read_to_string(path).map_err(|source| UpstreamError::ReadFile {
        what: "kubeconfig",
        path: path.to_path_buf(),
        source,
    })?;
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    resolve(&text, path, &base, context)
}

/// Parses kubeconfig `text` (from `origin`) and resolves `context`; relative paths are
/// taken from `base`.
pub fn resolve(
    text: &str,
    origin: &Path,
    base: &Path,
    context: Option<&str>,
) -> Result<Resolved, UpstreamError> {
    let err = |reason: String| UpstreamError::Kubeconfig {
        path: origin.to_path_buf(),
        reason,
    };
    let config: Kubeconfig = serde_saphyr::from_str(text).map_err(|e| {
        // Without the snippet: the surrounding lines could hold a token.
        err(format!("not a valid kubeconfig: {}", e.without_snippet()))
    })?;
    let context_name = match context {
        Some(name) => name.to_string(),
        None => config
            .current_context
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                err("it has no current-context; choose one with --upstream-context".into())
            })?,
    };
    let contexts = config.contexts.unwrap_or_default();
    let ctx = contexts
        .iter()
        .find(|c| c.name == context_name)
        .ok_or_else(|| {
            err(format!(
                "context {context_name:?} not found (contexts: {})",
                names(contexts.iter().map(|c| c.name.as_str()))
            ))
        })?;
    let info = ctx.context.as_ref();
    let cluster_name = info
        .and_then(|c| c.cluster.clone())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| err(format!("context {context_name:?} names no cluster")))?;
    let user_name = info
        .and_then(|c| c.user.clone())
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            err(format!(
                "context {context_name:?} names no user: the agent needs its own credential \
                 (a service account or user with impersonate rights)"
            ))
        })?;
    let clusters = config.clusters.unwrap_or_default();
    let cluster = clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .ok_or_else(|| {
            err(format!(
                "cluster {cluster_name:?} (of context {context_name:?}) not found (clusters: {})",
                names(clusters.iter().map(|c| c.name.as_str()))
            ))
        })?
        .cluster
        .as_ref()
        .ok_or_else(|| err(format!("cluster {cluster_name:?} is empty")))?;
    let users = config.users.unwrap_or_default();
    let user = users
        .iter()
        .find(|u| u.name == user_name)
        .ok_or_else(|| {
            err(format!(
                "user {user_name:?} (of context {context_name:?}) not found (users: {})",
                names(users.iter().map(|u| u.name.as_str()))
            ))
        })?
        .user
        .as_ref()
        .ok_or_else(|| err(format!("user {user_name:?} is empty")))?;

    let url = cluster
        .server
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| err(format!("cluster {cluster_name:?} has no server")))?;
    if cluster.insecure_skip_tls_verify == Some(true) {
        return Err(err(format!(
            "cluster {cluster_name:?} sets insecure-skip-tls-verify; the agent always verifies \
             the API server (give certificate-authority or certificate-authority-data)"
        )));
    }
    if cluster.proxy_url.is_some() {
        return Err(err(format!(
            "cluster {cluster_name:?} sets proxy-url, which the agent does not support"
        )));
    }
    let tls_server_name = match cluster.tls_server_name.as_deref().filter(|n| !n.is_empty()) {
        None => None,
        Some(name) => Some(
            rustls_pki_types::ServerName::try_from(name.to_string()).map_err(|e| {
                err(format!(
                    "cluster {cluster_name:?} tls-server-name {name:?}: {e}"
                ))
            })?,
        ),
    };
    let where_ = |field: &str| format!("{} cluster {cluster_name:?} {field}", origin.display());
    let ca = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        // As in client-go, inline data wins over a file.
        (Some(data), _) => Some(Pem::Inline {
            bytes: decode(data, &where_("certificate-authority-data"))?,
            origin: where_("certificate-authority-data"),
        }),
        (None, Some(file)) => Some(Pem::File(resolve_path(base, file))),
        (None, None) => None,
    };

    let user_where = |field: &str| format!("{} user {user_name:?} {field}", origin.display());
    if user.auth_provider.is_some() {
        return Err(err(format!(
            "user {user_name:?} uses an auth-provider, which kubectl no longer supports; \
             use exec instead"
        )));
    }
    if user.username.is_some() || user.password.is_some() {
        return Err(err(format!(
            "user {user_name:?} uses basic auth (username/password), which the agent does not \
             support"
        )));
    }
    if user.as_user.is_some() || user.as_groups.is_some() {
        return Err(err(format!(
            "user {user_name:?} sets as/as-groups; the agent impersonates each kubectl user \
             itself, so its own credential must not impersonate"
        )));
    }
    let bearer_kinds = [
        user.token.is_some(),
        user.token_file.is_some(),
        user.exec.is_some(),
    ];
    if bearer_kinds.iter().filter(|set| **set).count() > 1 {
        return Err(err(format!(
            "user {user_name:?} sets more than one of token, tokenFile and exec"
        )));
    }
    let bearer: Option<Box<dyn UpstreamCredential>> = if let Some(token) = &user.token {
        Some(Box::new(StaticToken::new(&token.0, user_where("token"))?))
    } else if let Some(file) = &user.token_file {
        Some(Box::new(
            TokenFile::new(resolve_path(base, file))
                .with_recheck_interval(super::token_file::REQUEST_PATH_RECHECK),
        ))
    } else if let Some(exec) = &user.exec {
        let spec = exec_spec(exec, base, &url, ca.as_ref())
            .map_err(|reason| err(format!("user {user_name:?}: {reason}")))?;
        Some(Box::new(ExecPlugin::shared(spec)))
    } else {
        None
    };
    let cert = match (&user.client_certificate_data, &user.client_certificate) {
        (Some(data), _) => Some(Pem::Inline {
            bytes: decode(data, &user_where("client-certificate-data"))?,
            origin: user_where("client-certificate-data"),
        }),
        (None, Some(file)) => Some(Pem::File(resolve_path(base, file))),
        (None, None) => None,
    };
    let key = match (&user.client_key_data, &user.client_key) {
        (Some(data), _) => Some(Pem::Inline {
            bytes: decode(&data.0, &user_where("client-key-data"))?,
            origin: user_where("client-key-data"),
        }),
        (None, Some(file)) => Some(Pem::File(resolve_path(base, file))),
        (None, None) => None,
    };
    let credential: Arc<dyn UpstreamCredential> = match (cert, key, bearer) {
        (Some(cert), Some(key), bearer) => Arc::new(WithClientCertificate::new(
            client_cert::load(&cert, &key)?,
            bearer,
        )),
        (Some(_), None, _) | (None, Some(_), _) => {
            return Err(err(format!(
                "user {user_name:?} needs both a client certificate and a client key"
            )));
        }
        (None, None, Some(bearer)) => Arc::from(bearer),
        (None, None, None) => {
            return Err(err(format!(
                "user {user_name:?} has no credential (token, tokenFile, \
                 client-certificate/client-key or exec)"
            )));
        }
    };
    Ok(Resolved {
        context: context_name,
        url,
        ca,
        credential,
        tls_server_name,
    })
}

fn exec_spec(
    exec: &ExecConfig,
    base: &Path,
    url: &str,
    ca: Option<&Pem>,
) -> Result<ExecSpec, String> {
    if exec.interactive_mode.as_deref() == Some("Always") {
        return Err(
            "its exec plugin needs a terminal (interactiveMode: Always), and the \
                    agent runs without one"
                .into(),
        );
    }
    let command = exec.command.clone().unwrap_or_default();
    // Like kubectl: a command with a slash is a path, relative to the kubeconfig.
    let command = if command.contains('/') {
        resolve_path(base, &command).display().to_string()
    } else {
        command
    };
    let cluster = exec.provide_cluster_info.then(|| {
        let mut cluster = serde_json::json!({ "server": url });
        if let Some(pem) = ca.and_then(|ca| ca.read("CA").ok()) {
            cluster["certificate-authority-data"] =
                base64::engine::general_purpose::STANDARD.encode(pem).into();
        }
        cluster
    });
    let spec = ExecSpec {
        api_version: exec.api_version.clone().unwrap_or_default(),
        command,
        args: exec.args.clone().unwrap_or_default(),
        env: exec
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect(),
        cluster,
    };
    spec.validate()?;
    Ok(spec)
}

fn decode(data: &str, origin: &str) -> Result<Vec<u8>, UpstreamError> {
    let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| UpstreamError::BadPem {
            what: "base64 data",
            origin: origin.to_string(),
            reason: e.to_string(),
        })
}

fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let list: Vec<String> = names.map(|n| format!("{n:?}")).collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pki {
        ca: String,
        cert: String,
        key: String,
    }

    fn pki() -> Result<Pki, rcgen::Error> {
        let ca_key = rcgen::KeyPair::generate()?;
        let ca = rcgen::CertificateParams::new(vec!["ca".into()])?.self_signed(&ca_key)?;
        let key = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(vec!["agent".into()])?.self_signed(&key)?;
        Ok(Pki {
            ca: ca.pem(),
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    fn config(cluster: &str, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: main\npreferences: {{}}\n\
             clusters:\n- name: c1\n  cluster:\n{cluster}\n\
             contexts:\n- name: main\n  context:\n    cluster: c1\n    user: u1\n    namespace: x\n\
             - name: other\n  context:\n    cluster: c1\n    user: nobody\n\
             users:\n- name: u1\n  user:\n{user}\n"
        )
    }

    fn run(text: &str, context: Option<&str>) -> Result<Resolved, UpstreamError> {
        resolve(
            text,
            Path::new("/etc/kube/config"),
            Path::new("/etc/kube"),
            context,
        )
    }

    fn error(text: &str, context: Option<&str>) -> String {
        match run(text, context) {
            Ok(_) => "accepted".into(),
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn token_user_with_relative_ca_file() -> Result<(), Box<dyn std::error::Error>> {
        let text = config(
            "    server: https://10.0.0.1:6443\n    certificate-authority: pki/ca.crt",
            "    token: abc123",
        );
        let resolved = run(&text, None)?;
        assert_eq!(resolved.context, "main");
        assert_eq!(resolved.url, "https://10.0.0.1:6443");
        assert_eq!(
            resolved.ca,
            Some(Pem::File(PathBuf::from("/etc/kube/pki/ca.crt")))
        );
        let header = resolved.credential.authorization().await?.ok_or("none")?;
        assert_eq!(header, "Bearer abc123");
        assert!(resolved.credential.client_identity().is_none());
        assert!(resolved.tls_server_name.is_none());
        let named = text.replace(
            "    certificate-authority: pki/ca.crt",
            "    certificate-authority: pki/ca.crt\n    tls-server-name: kubernetes.default.svc",
        );
        assert_eq!(
            run(&named, None)?.tls_server_name,
            Some(rustls_pki_types::ServerName::try_from(
                "kubernetes.default.svc"
            )?)
        );
        Ok(())
    }

    #[tokio::test]
    async fn inline_data_and_files_for_client_certificates()
    -> Result<(), Box<dyn std::error::Error>> {
        let pki = pki()?;
        let inline = config(
            &format!(
                "    server: https://k\n    certificate-authority-data: {}",
                b64(&pki.ca)
            ),
            &format!(
                "    client-certificate-data: {}\n    client-key-data: {}",
                b64(&pki.cert),
                b64(&pki.key)
            ),
        );
        let resolved = run(&inline, None)?;
        assert!(matches!(resolved.ca, Some(Pem::Inline { .. })));
        let inline_certs = resolved
            .credential
            .client_identity()
            .ok_or("no identity")?
            .certs
            .clone();
        assert!(resolved.credential.authorization().await?.is_none());

        // The same material as files relative to the kubeconfig's directory.
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("certs"))?;
        std::fs::write(dir.path().join("certs/agent.crt"), &pki.cert)?;
        std::fs::write(dir.path().join("certs/agent.key"), &pki.key)?;
        std::fs::write(dir.path().join("ca.crt"), &pki.ca)?;
        let path = dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            config(
                "    server: https://k\n    certificate-authority: ca.crt",
                "    client-certificate: certs/agent.crt\n    client-key: certs/agent.key\n    token: also",
            ),
        )?;
        let resolved = load(&path, Some("main"))?;
        assert_eq!(resolved.ca, Some(Pem::File(dir.path().join("ca.crt"))));
        let identity = resolved.credential.client_identity().ok_or("no identity")?;
        assert_eq!(identity.certs, inline_certs);
        // Certificate plus token: both are presented.
        assert_eq!(
            resolved.credential.authorization().await?.ok_or("none")?,
            "Bearer also"
        );
        Ok(())
    }

    #[tokio::test]
    async fn token_file_is_relative_and_exec_command_too() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("tok"), "from-file\n")?;
        let path = dir.path().join("config");
        std::fs::write(&path, config("    server: https://k", "    tokenFile: tok"))?;
        let resolved = load(&path, None)?;
        assert_eq!(
            resolved.credential.authorization().await?.ok_or("none")?,
            "Bearer from-file"
        );
        let exec = config(
            "    server: https://k",
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: ./bin/plugin\n      args: null\n      env:\n      - name: A\n        value: b\n      interactiveMode: Never",
        );
        let resolved = run(&exec, None)?;
        assert_eq!(
            resolved.credential.describe(),
            "exec plugin /etc/kube/./bin/plugin"
        );
        let bare = exec.replace("./bin/plugin", "aws");
        assert_eq!(run(&bare, None)?.credential.describe(), "exec plugin aws");
        Ok(())
    }

    #[test]
    fn missing_and_refused_settings_are_clear_errors() {
        let ok_cluster = "    server: https://k";
        let cases: Vec<(String, Option<&str>, &str)> = vec![
            (
                config(ok_cluster, "    token: t"),
                Some("nope"),
                "context \"nope\" not found (contexts: \"main\", \"other\")",
            ),
            (
                config(ok_cluster, "    token: t"),
                Some("other"),
                "user \"nobody\"",
            ),
            (
                config(ok_cluster, "    token: t").replace("current-context: main\n", ""),
                None,
                "no current-context",
            ),
            (
                config("    certificate-authority: x", "    token: t"),
                None,
                "has no server",
            ),
            (
                config(
                    "    server: https://k\n    insecure-skip-tls-verify: true",
                    "    token: t",
                ),
                None,
                "insecure-skip-tls-verify",
            ),
            (
                config(ok_cluster, "    client-certificate: a.crt"),
                None,
                "both a client certificate and a client key",
            ),
            (
                config(ok_cluster, "    token: t\n    tokenFile: f"),
                None,
                "more than one",
            ),
            (
                config(ok_cluster, "    username: u\n    password: p"),
                None,
                "basic auth",
            ),
            (
                config(ok_cluster, "    token: t\n    as: admin"),
                None,
                "impersonate",
            ),
            (
                config(ok_cluster, "    auth-provider:\n      name: gcp"),
                None,
                "auth-provider",
            ),
            (config(ok_cluster, "    {}"), None, "has no credential"),
            (
                config(
                    ok_cluster,
                    "    exec:\n      apiVersion: client.authentication.k8s.io/v1alpha1\n      command: x",
                ),
                None,
                "not supported",
            ),
            (
                config(
                    ok_cluster,
                    "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: x\n      interactiveMode: Always",
                ),
                None,
                "terminal",
            ),
            (
                config(
                    ok_cluster,
                    "    client-certificate: /nonexistent/a.crt\n    client-key: /nonexistent/a.key",
                ),
                None,
                "/nonexistent/a.crt",
            ),
            (
                config(
                    "    server: https://k\n    certificate-authority-data: '%%%'",
                    "    token: t",
                ),
                None,
                "base64",
            ),
            ("clusters: [".into(), None, "not a valid kubeconfig"),
            (
                config(
                    "    server: https://k\n    proxy-url: http://proxy:3128",
                    "    token: t",
                ),
                None,
                "proxy-url",
            ),
            (
                config(
                    "    server: https://k\n    tls-server-name: 'not a name!'",
                    "    token: t",
                ),
                None,
                "tls-server-name",
            ),
        ];
        for (text, context, want) in cases {
            let got = error(&text, context);
            assert!(got.contains(want), "want {want:?} in {got:?}");
            assert!(
                got.contains("/etc/kube/config") || got.contains("/nonexistent"),
                "{got}"
            );
        }
    }

    #[test]
    fn parse_errors_do_not_quote_tokens() {
        let text = "users:\n- name: u\n  user:\n    token: supersecret\n    exec: [unclosed\n";
        let got = error(text, Some("main"));
        assert!(!got.contains("supersecret"), "{got}");
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() -> Result<(), serde_saphyr::Error> {
        let user: AuthInfo = serde_saphyr::from_str("token: hunter2\nclient-key-data: a2V5\n")?;
        let debug = format!("{user:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("a2V5"),
            "{debug}"
        );
        Ok(())
    }
}
