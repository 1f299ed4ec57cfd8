//! Reads PEM files into rustls server and client configurations (ring provider).

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors loading TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("reading {what} from {path}")]
    Pem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The CA file holds no certificate rustls accepts.
    #[error("{path} holds no usable CA certificate")]
    NoRoots {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the material.
    #[error("building TLS configuration")]
    Rustls(#[from] rustls::Error),
}

/// Module result shorthand.
pub type Result<T> = std::result::Result<T, TlsError>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// All certificates in a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem_err = |source| TlsError::Pem {
        what: "certificates",
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_err)?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(pem_err)?;
    if certs.is_empty() {
        return Err(pem_err(rustls_pki_types::pem::Error::NoItemsFound));
    }
    Ok(certs)
}

/// The server config the agent's listener presents: `h2` and `http/1.1` by ALPN.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<rustls::ServerConfig> {
    let certs = read_certs(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::Pem {
        what: "private key",
        path: key_file.to_path_buf(),
        source,
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A client config trusting the CAs in `ca_file`, or the Mozilla roots when `None`.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let (added, _ignored) = roots.add_parsable_certificates(read_certs(path)?);
            if added == 0 {
                return Err(TlsError::NoRoots {
                    path: path.to_path_buf(),
                });
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_name_the_path() {
        let err = server_config(Path::new("/nonexistent/tls.crt"), Path::new("/x"));
        let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("/nonexistent/tls.crt"), "{msg}");
    }

    #[test]
    fn generated_pair_loads() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let key = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])?.self_signed(&key)?;
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, cert.pem())?;
        std::fs::write(&k, key.serialize_pem())?;
        let config = server_config(&c, &k)?;
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        client_config(Some(&c))?;
        client_config(None)?;
        Ok(())
    }
}
