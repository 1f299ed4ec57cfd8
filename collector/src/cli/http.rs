//! HTTPS client the `gatehouse` CLI talks to the OIDC issuer with (rustls; an optional CA file).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest one issuer request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest issuer answer read (discovery and token responses are a few KiB).
const MAX_BODY: usize = 1024 * 1024;

/// Errors talking to the issuer. Never carries request bodies (they hold secrets).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The CA file could not be read or holds no certificate.
    #[error("issuer CA file {path}: {reason}")]
    CaFile {
        /// File involved.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Only `https://` issuer URLs are accepted.
    #[error("{0}: the issuer must be an https:// URL")]
    NotHttps(String),
    /// Not a valid URL.
    #[error("{0}: invalid URL")]
    BadUrl(String),
    /// Connection, TLS or protocol failure.
    #[error("{url}: {reason}")]
    Transport {
        /// URL requested.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// No answer within [`REQUEST_TIMEOUT`].
    #[error("{0}: no answer within {REQUEST_TIMEOUT:?}")]
    Timeout(String),
}

/// An answer: status code and body.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: http::StatusCode,
    /// Body (at most 1 MiB).
    pub body: Bytes,
}

/// Client for one issuer's endpoints.
#[derive(Clone)]
pub struct IssuerClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for IssuerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerClient").finish_non_exhaustive()
    }
}

impl IssuerClient {
    /// Trusts only `ca_file` when given, else the Mozilla roots (webpki-roots).
    pub fn new(ca_file: Option<&Path>) -> Result<Self, HttpError> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let ca_err = |reason: String| HttpError::CaFile {
                    path: path.to_path_buf(),
                    reason,
                };
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .map_err(|e| ca_err(e.to_string()))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| ca_err(e.to_string()))?;
                if certs.is_empty() {
                    return Err(ca_err("no PEM certificate in it".into()));
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Transport {
            url: String::new(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Result<Reply, HttpError> {
        self.send(http::Method::GET, url, None).await
    }

    /// `POST url` with an `application/x-www-form-urlencoded` body of `fields`.
    pub async fn post_form(&self, url: &str, fields: &[(&str, &str)]) -> Result<Reply, HttpError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.send(http::Method::POST, url, Some(body)).await
    }

    async fn send(
        &self,
        method: http::Method,
        url: &str,
        form: Option<String>,
    ) -> Result<Reply, HttpError> {
        let uri: http::Uri = url.parse().map_err(|_| HttpError::BadUrl(url.into()))?;
        if uri.scheme_str() != Some("https") {
            return Err(HttpError::NotHttps(url.into()));
        }
        let mut builder = http::Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::ACCEPT, "application/json");
        if form.is_some() {
            builder = builder.header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        }
        let req = builder
            .body(Full::new(Bytes::from(form.unwrap_or_default())))
            .map_err(|_| HttpError::BadUrl(url.into()))?;
        let transport = |e: &dyn std::fmt::Display| HttpError::Transport {
            url: url.into(),
            reason: e.to_string(),
        };
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| {
                // The interesting part (TLS, refused) is in the source chain.
                let mut reason = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    reason = format!("{reason}: {s}");
                    src = s.source();
                }
                transport(&reason)
            })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| transport(&e))?
                .to_bytes();
            Ok(Reply { status, body })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| HttpError::Timeout(url.into()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_must_hold_a_certificate() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a pem\n")?;
        assert!(matches!(
            IssuerClient::new(Some(&empty)),
            Err(HttpError::CaFile { .. })
        ));
        assert!(IssuerClient::new(Some(&dir.path().join("missing.pem"))).is_err());
        assert!(IssuerClient::new(None).is_ok());
        Ok(())
    }

    #[tokio::test]
    async fn plain_http_is_refused() -> anyhow::Result<()> {
        let c = IssuerClient::new(None)?;
        assert!(matches!(
            c.get("http://127.0.0.1:1/x").await,
            Err(HttpError::NotHttps(_))
        ));
        Ok(())
    }
}
