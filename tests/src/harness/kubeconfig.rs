//! Writes kubeconfig files pointing kubectl at a test server.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// How a kubeconfig user authenticates.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A bearer token.
    Token(String),
    /// A client certificate and key (PEM files).
    ClientCert {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
    },
    /// An exec credential plugin (`client.authentication.k8s.io/v1`).
    Exec {
        /// Plugin binary.
        command: PathBuf,
        /// Its arguments.
        args: Vec<String>,
    },
    /// No credential at all.
    Anonymous,
}

/// One context: a server, its CA, a user and a default namespace.
#[derive(Debug, Clone)]
pub struct Context {
    /// Context (and cluster/user) name.
    pub name: String,
    /// `https://127.0.0.1:PORT`.
    pub server: String,
    /// CA certificate file the server's certificate chains to.
    pub ca_file: PathBuf,
    /// How the user authenticates.
    pub credential: Credential,
    /// Default namespace, if any.
    pub namespace: Option<String>,
}

/// Builds the kubeconfig document (JSON, which kubectl reads as YAML) for `contexts`;
/// the first context is current.
pub fn document(contexts: &[Context]) -> Value {
    let clusters: Vec<Value> = contexts
        .iter()
        .map(|c| {
            json!({"name": c.name, "cluster": {
                "server": c.server,
                "certificate-authority": c.ca_file,
            }})
        })
        .collect();
    let users: Vec<Value> = contexts
        .iter()
        .map(|c| {
            let user = match &c.credential {
                Credential::Token(token) => json!({"token": token}),
                Credential::ClientCert { cert, key } => {
                    json!({"client-certificate": cert, "client-key": key})
                }
                Credential::Exec { command, args } => json!({"exec": {
                    "apiVersion": "client.authentication.k8s.io/v1",
                    "command": command,
                    "args": args,
                    "interactiveMode": "Never",
                }}),
                Credential::Anonymous => json!({}),
            };
            json!({"name": c.name, "user": user})
        })
        .collect();
    let ctxs: Vec<Value> = contexts
        .iter()
        .map(|c| {
            let mut context = json!({"cluster": c.name, "user": c.name});
            if let (Some(ns), Some(obj)) = (&c.namespace, context.as_object_mut()) {
                obj.insert("namespace".into(), json!(ns));
            }
            json!({"name": c.name, "context": context})
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": clusters,
        "users": users,
        "contexts": ctxs,
        "current-context": contexts.first().map(|c| c.name.clone()).unwrap_or_default(),
        "preferences": {},
    })
}

/// Writes the kubeconfig for `contexts` to `path` (mode 0600: it holds credentials).
pub fn write(path: &Path, contexts: &[Context]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let body = serde_json::to_vec_pretty(&document(contexts)).map_err(std::io::Error::other)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(&body)
}
