//! TLS for the ingest listener: the collector's certificate, ALPN `h2`, and optional agent
//! client certificates verified against `--agent-ca-file`, whose CN names the agent.

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why the TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing, unreadable or holds nothing usable.
    #[error("reading {what} from {path}: {source}")]
    Pem {
        /// Certificates or private key.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The reader's error.
        source: rustls_pki_types::pem::Error,
    },
    /// The agent CA file holds no certificate rustls accepts as a root.
    #[error("no usable CA certificate in {0}")]
    NoRoots(PathBuf),
    /// rustls refused the combination (e.g. key does not match the certificate).
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |source| TlsError::Pem {
        what: "certificates",
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err)?;
    if certs.is_empty() {
        return Err(pem_err(rustls_pki_types::pem::Error::NoItemsFound));
    }
    Ok(certs)
}

/// The listener's rustls config. With `agent_ca_file`, client certificates are verified
/// against it; clients without one still complete the handshake so that they get a clear
/// HTTP 401 (or can present a bearer token) instead of an opaque TLS alert.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    agent_ca_file: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = read_certs(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::Pem {
        what: "private key",
        path: key_file.to_path_buf(),
        source,
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match agent_ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(read_certs(path)?);
            if added == 0 {
                return Err(TlsError::NoRoots(path.to_path_buf()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    // Ingest is HTTP/2 only: one long-lived stream per agent with flow control.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The agent name of a verified leaf certificate: its subject CN (non-empty).
pub fn agent_name(leaf: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).ok()?;
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_name_the_path() {
        let err = server_config(Path::new("/nonexistent/c.pem"), Path::new("/x"), None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("/nonexistent/c.pem"), "{err}");
    }

    #[test]
    fn garbage_certificate_has_no_name() {
        assert_eq!(agent_name(&CertificateDer::from(vec![1u8, 2, 3])), None);
    }
}
