//! Throwaway certificate authorities and leaf certificates for loopback TLS.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors from certificate generation or writing.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters.
    #[error("certificate generation failed")]
    Generate(#[from] rcgen::Error),
    /// Writing a PEM file failed.
    #[error("writing {path}")]
    Write {
        /// File that could not be written.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// rustls refused the generated material.
    #[error("building rustls config")]
    Rustls(#[from] rustls::Error),
}

/// A certificate and its private key, PEM encoded.
#[derive(Debug, Clone)]
pub struct CertKeyPem {
    /// Leaf certificate (PEM).
    pub cert_pem: String,
    /// PKCS#8 private key (PEM).
    pub key_pem: String,
}

impl CertKeyPem {
    /// Writes `<stem>.crt` and `<stem>.key` into `dir`, returning both paths.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), PkiError> {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        write_file(&cert, &self.cert_pem)?;
        write_file(&key, &self.key_pem)?;
        Ok((cert, key))
    }

    /// A rustls server config presenting this certificate, with the given ALPN protocols.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let certs = vec![rustls_pki_types::CertificateDer::from(pem_der(
            &self.cert_pem,
            "CERTIFICATE",
        ))];
        let key =
            rustls_pki_types::PrivateKeyDer::Pkcs8(pem_der(&self.key_pem, "PRIVATE KEY").into());
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    // --- client certificates at the emulator ---
    /// Like [`CertKeyPem::server_config`], and also asks for an optional client
    /// certificate, verified against `client_ca_pem` (clients without one still connect).
    pub fn server_config_with_client_ca(
        &self,
        alpn: &[&[u8]],
        client_ca_pem: &str,
    ) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls_pki_types::CertificateDer::from(pem_der(
            client_ca_pem,
            "CERTIFICATE",
        )))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        let certs = vec![rustls_pki_types::CertificateDer::from(pem_der(
            &self.cert_pem,
            "CERTIFICATE",
        ))];
        let key =
            rustls_pki_types::PrivateKeyDer::Pkcs8(pem_der(&self.key_pem, "PRIVATE KEY").into());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// A self-signed certificate authority that issues loopback server and client certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// Creates a new CA whose subject common name is `name`.
    pub fn new(name: &str) -> Result<Self, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Self { issuer })
    }

    /// The CA certificate (PEM), for clients' trust stores.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `path`.
    pub fn write_cert(&self, path: &Path) -> Result<(), PkiError> {
        write_file(path, &self.cert_pem())
    }

    /// Issues a server certificate for `127.0.0.1`, `localhost` and any extra names.
    pub fn issue_server(
        &self,
        common_name: &str,
        extra_names: &[&str],
    ) -> Result<CertKeyPem, PkiError> {
        let mut names: Vec<String> = vec!["127.0.0.1".into(), "localhost".into()];
        names.extend(extra_names.iter().map(|n| n.to_string()));
        let mut params = CertificateParams::new(names)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// Issues a client certificate with subject CN = `user` and O = each of `groups`
    /// (the way the API server reads client certificates).
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> Result<CertKeyPem, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, user);
        for group in groups {
            dn.push(DnType::OrganizationName, *group);
        }
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Result<CertKeyPem, PkiError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertKeyPem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A rustls client config trusting only `ca_pem`.
pub fn client_config_trusting(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, PkiError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from(pem_der(
        ca_pem,
        "CERTIFICATE",
    )))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Decodes the first PEM block with `label` (our own generated PEM: well-formed by construction).
fn pem_der(pem: &str, label: &str) -> Vec<u8> {
    use base64::Engine;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body: String = pem
        .split(&begin)
        .nth(1)
        .and_then(|rest| rest.split(&end).next())
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap_or_default()
}

fn write_file(path: &Path, contents: &str) -> Result<(), PkiError> {
    std::fs::write(path, contents).map_err(|source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_server_cert_is_accepted_by_rustls() -> anyhow::Result<()> {
        let ca = Ca::new("test-ca")?;
        let leaf = ca.issue_server("emulator", &[])?;
        leaf.server_config(&[b"h2", b"http/1.1"])?;
        client_config_trusting(&ca.cert_pem())?;
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!pem_der(&leaf.key_pem, "PRIVATE KEY").is_empty());
        Ok(())
    }
}
