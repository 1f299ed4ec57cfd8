//! The pluggable upstream-credential interface: what the agent presents to the API server
//! as itself (a bearer header per request, a TLS client certificate, or both), and the
//! simple implementations (none, a fixed token).

use futures_util::future::BoxFuture;
use http::HeaderValue;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;

/// Errors obtaining the agent's own credential.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A credential file could not be read.
    #[error("reading upstream token file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A token file is empty.
    #[error("upstream token file {0} is empty")]
    Empty(PathBuf),
    /// A token cannot be sent as a header value.
    #[error("the upstream token from {0} holds characters not allowed in an HTTP header")]
    BadToken(String),
    /// The exec plugin failed or printed something unusable.
    #[error("exec credential plugin {command:?}: {reason}")]
    Exec {
        /// The plugin's command.
        command: String,
        /// What went wrong (never the plugin's stdout: it may hold a token).
        reason: String,
    },
    /// The service that issues the credential (STS for EKS) is unreachable or refused:
    /// the agent answers 503, as when the API server itself is down.
    #[error("{what}: {reason}")]
    Unavailable {
        /// The credential (its `describe()`).
        what: String,
        /// Why (never a secret).
        reason: String,
    },
}

/// The agent's own identity towards the API server.
///
/// `authorization` is called once per forwarded request, so implementations cache (a token
/// file is `stat`ed, an exec plugin runs only when its token nears expiry). The client
/// certificate, if any, is read once when the upstream client is built. The EKS credential
/// (an STS-presigned token) plugs in here too.
pub trait UpstreamCredential: Send + Sync {
    /// The `Authorization` header value to send, if this credential uses one.
    fn authorization(&self) -> BoxFuture<'_, Result<Option<HeaderValue>, CredentialError>>;

    /// The TLS client certificate to present, if this credential uses one.
    fn client_identity(&self) -> Option<&ClientIdentity> {
        None
    }

    /// Where the credential comes from, for logs and errors (never the secret itself).
    fn describe(&self) -> String;

    /// The API server answered 401 to a request that carried `sent`: a cached credential
    /// renews itself before the next request (default: nothing cached, nothing to do).
    fn rejected(&self, _sent: Option<&HeaderValue>) {}
}

impl<T: UpstreamCredential + ?Sized> UpstreamCredential for std::sync::Arc<T> {
    fn authorization(&self) -> BoxFuture<'_, Result<Option<HeaderValue>, CredentialError>> {
        (**self).authorization()
    }

    fn client_identity(&self) -> Option<&ClientIdentity> {
        (**self).client_identity()
    }

    fn describe(&self) -> String {
        (**self).describe()
    }

    fn rejected(&self, sent: Option<&HeaderValue>) {
        (**self).rejected(sent)
    }
}

/// A client certificate chain and its private key.
pub struct ClientIdentity {
    /// Leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// Where it was loaded from (for logs).
    pub origin: String,
    /// When both came from files: re-read them on change (see
    /// [`super::client_cert::ReloadingClientCert`]).
    pub reload: Option<std::sync::Arc<super::client_cert::ReloadingClientCert>>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("origin", &self.origin)
            .field("certs", &self.certs.len())
            .finish_non_exhaustive()
    }
}

/// `Bearer <token>` as a sensitive header value (kept out of hyper's debug output).
pub fn bearer(token: &str, origin: &str) -> Result<HeaderValue, CredentialError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| CredentialError::BadToken(origin.to_string()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// No credential at all (only for tests and plain-HTTP test upstreams).
#[derive(Debug, Default)]
pub struct NoCredential;

impl UpstreamCredential for NoCredential {
    fn authorization(&self) -> BoxFuture<'_, Result<Option<HeaderValue>, CredentialError>> {
        Box::pin(async { Ok(None) })
    }

    fn describe(&self) -> String {
        "no credential".into()
    }
}

/// A token given inline (kubeconfig `token:`), fixed for the process's lifetime.
pub struct StaticToken {
    header: HeaderValue,
    origin: String,
}

impl StaticToken {
    /// `origin` names where the token came from, e.g. `kubeconfig user "agent"`.
    pub fn new(token: &str, origin: impl Into<String>) -> Result<Self, CredentialError> {
        let origin = origin.into();
        Ok(Self {
            header: bearer(token.trim(), &origin)?,
            origin,
        })
    }
}

impl UpstreamCredential for StaticToken {
    fn authorization(&self) -> BoxFuture<'_, Result<Option<HeaderValue>, CredentialError>> {
        Box::pin(async { Ok(Some(self.header.clone())) })
    }

    fn describe(&self) -> String {
        format!("token from {}", self.origin)
    }
}

/// A client certificate, optionally together with a bearer credential (a kubeconfig user
/// may set both; the API server then sees the token).
pub struct WithClientCertificate {
    identity: ClientIdentity,
    bearer: Option<Box<dyn UpstreamCredential>>,
}

impl WithClientCertificate {
    /// The certificate alone, or with `bearer`.
    pub fn new(identity: ClientIdentity, bearer: Option<Box<dyn UpstreamCredential>>) -> Self {
        Self { identity, bearer }
    }
}

impl UpstreamCredential for WithClientCertificate {
    fn authorization(&self) -> BoxFuture<'_, Result<Option<HeaderValue>, CredentialError>> {
        match &self.bearer {
            Some(inner) => inner.authorization(),
            None => Box::pin(async { Ok(None) }),
        }
    }

    fn client_identity(&self) -> Option<&ClientIdentity> {
        Some(&self.identity)
    }

    fn rejected(&self, sent: Option<&HeaderValue>) {
        if let Some(inner) = &self.bearer {
            inner.rejected(sent);
        }
    }

    fn describe(&self) -> String {
        match &self.bearer {
            Some(inner) => format!(
                "client certificate {} and {}",
                self.identity.origin,
                inner.describe()
            ),
            None => format!("client certificate {}", self.identity.origin),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_token_is_a_sensitive_bearer_header() -> Result<(), CredentialError> {
        let token = StaticToken::new(" abc \n", "kubeconfig user \"u\"")?;
        let header = token
            .authorization()
            .await?
            .ok_or(CredentialError::Empty(PathBuf::from("no header")))?;
        assert_eq!(header, "Bearer abc");
        assert!(header.is_sensitive());
        assert!(!token.describe().contains("abc"));
        assert!(NoCredential.authorization().await?.is_none());
        Ok(())
    }

    #[test]
    fn a_token_with_a_newline_inside_is_refused() {
        assert!(matches!(
            StaticToken::new("a\nb", "x"),
            Err(CredentialError::BadToken(_))
        ));
    }
}
