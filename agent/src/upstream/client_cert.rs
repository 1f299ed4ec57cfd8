//! The agent's TLS client certificate for the API server (mTLS): a certificate chain and
//! key from PEM files or inline PEM (kubeconfig `client-certificate(-data)`,
//! `client-key(-data)`), checked to belong together when the agent starts. Files are
//! re-read when they change (cert-manager style rotation); new connections then present
//! the new pair, and a broken new pair is logged while the last good one stays.

use super::UpstreamError;
use super::credential::ClientIdentity;
use crate::tls::ReloadingPair;
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a PEM blob comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pem {
    /// A file (read when the upstream client is built).
    File(PathBuf),
    /// Inline bytes (decoded `*-data`), with a name for error messages.
    Inline {
        /// The PEM text.
        bytes: Vec<u8>,
        /// Where it was found, e.g. `kubeconfig user "agent" client-key-data`.
        origin: String,
    },
}

impl Pem {
    /// For error messages.
    pub fn origin(&self) -> String {
        match self {
            Pem::File(path) => path.display().to_string(),
            Pem::Inline { origin, .. } => origin.clone(),
        }
    }

    /// The PEM text.
    pub fn read(&self, what: &'static str) -> Result<Vec<u8>, UpstreamError> {
        match self {
            Pem::File(path) => std::fs::read(path).map_err(|source| UpstreamError::ReadFile {
                what,
                path: path.clone(),
                source,
            }),
            Pem::Inline { bytes, .. } => Ok(bytes.clone()),
        }
    }

    /// Every certificate in it; at least one.
    pub fn certificates(
        &self,
        what: &'static str,
    ) -> Result<Vec<CertificateDer<'static>>, UpstreamError> {
        let bytes = self.read(what)?;
        let bad = |reason: String| UpstreamError::BadPem {
            what,
            origin: self.origin(),
            reason,
        };
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM CERTIFICATE block".into()));
        }
        Ok(certs)
    }

    /// The private key in it (PKCS#8, SEC1 or PKCS#1).
    fn private_key(&self) -> Result<PrivateKeyDer<'static>, UpstreamError> {
        let bytes = self.read("client key")?;
        // The error text of the PEM parser names no key material.
        PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| UpstreamError::BadPem {
            what: "client key",
            origin: self.origin(),
            reason: e.to_string(),
        })
    }
}

/// Loads and checks a certificate + key pair (fail closed: a mismatch stops the start).
pub fn load(cert: &Pem, key: &Pem) -> Result<ClientIdentity, UpstreamError> {
    let (certs, key_der) = read_pair(cert, key)?;
    let reload = match (cert, key) {
        (Pem::File(c), Pem::File(k)) => Some(Arc::new(reloading(c, k)?)),
        _ => None,
    };
    Ok(ClientIdentity {
        certs,
        key: key_der,
        origin: cert.origin(),
        reload,
    })
}

fn read_pair(
    cert: &Pem,
    key: &Pem,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), UpstreamError> {
    let certified = certified_key(cert, key)?;
    Ok((certified.cert.clone(), key.private_key()?))
}

/// The pair as rustls presents it, checked to match.
fn certified_key(cert: &Pem, key: &Pem) -> Result<CertifiedKey, UpstreamError> {
    let certs = cert.certificates("client certificate")?;
    let key_der = key.private_key()?;
    let provider = rustls::crypto::ring::default_provider();
    let mismatch = |reason: String| UpstreamError::ClientCertificate {
        cert: cert.origin(),
        key: key.origin(),
        reason,
    };
    let signing = provider
        .key_provider
        .load_private_key(key_der.clone_key())
        .map_err(|e| mismatch(e.to_string()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| mismatch(e.to_string()))?;
    Ok(certified)
}

/// The upstream client certificate from files, re-read when they change.
pub type ReloadingClientCert = ReloadingPair<UpstreamError>;

/// Loads a client certificate pair from files (the [`ReloadingPair`] loader).
fn load_files(cert: &Path, key: &Path) -> Result<CertifiedKey, UpstreamError> {
    certified_key(
        &Pem::File(cert.to_path_buf()),
        &Pem::File(key.to_path_buf()),
    )
}

fn reloading(cert: &Path, key: &Path) -> Result<ReloadingClientCert, UpstreamError> {
    ReloadingPair::load(cert, key, "upstream client certificate", load_files)
}

impl ResolvesClientCert for ReloadingClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `path` as given, or relative to `base` (kubeconfig paths are relative to its directory).
pub fn resolve_path(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> Result<(String, String), rcgen::Error> {
        let key = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(vec!["agent".into()])?.self_signed(&key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    fn inline(text: &str, origin: &str) -> Pem {
        Pem::Inline {
            bytes: text.as_bytes().to_vec(),
            origin: origin.into(),
        }
    }

    #[test]
    fn files_and_inline_data_load_alike() -> Result<(), Box<dyn std::error::Error>> {
        let (cert, key) = pair()?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("c.pem"), &cert)?;
        std::fs::write(dir.path().join("k.pem"), &key)?;
        let from_files = load(
            &Pem::File(dir.path().join("c.pem")),
            &Pem::File(dir.path().join("k.pem")),
        )?;
        let from_data = load(&inline(&cert, "c"), &inline(&key, "k"))?;
        assert_eq!(from_files.certs, from_data.certs);
        // Debug output names the origin, never the key.
        let debug = format!("{from_files:?}");
        assert!(
            debug.contains("c.pem") && !debug.contains("PRIVATE"),
            "{debug}"
        );
        Ok(())
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let (cert, _) = pair()?;
        let (_, other_key) = pair()?;
        let err = load(&inline(&cert, "c"), &inline(&other_key, "k"))
            .err()
            .ok_or("mismatch accepted")?;
        assert!(
            matches!(err, UpstreamError::ClientCertificate { .. }),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn unreadable_and_garbage_files_name_the_file() -> Result<(), Box<dyn std::error::Error>> {
        let err = load(&Pem::File("/nonexistent/c.pem".into()), &inline("", "k"))
            .err()
            .ok_or("accepted")?;
        assert!(err.to_string().contains("/nonexistent/c.pem"), "{err}");
        let err = load(&inline("not pem", "inline-cert"), &inline("", "k"))
            .err()
            .ok_or("accepted")?;
        assert!(err.to_string().contains("inline-cert"), "{err}");
        Ok(())
    }

    #[test]
    fn rotated_files_are_picked_up_and_broken_ones_ignored()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let write = |pair: &(String, String)| -> std::io::Result<()> {
            std::fs::write(&c, &pair.0)?;
            std::fs::write(&k, &pair.1)
        };
        write(&pair()?)?;
        let identity = load(&Pem::File(c.clone()), &Pem::File(k.clone()))?;
        let resolver = identity.reload.ok_or("files but no reloader")?;
        let first = resolver.current().ok_or("none")?.cert[0].clone();
        assert_eq!(first, identity.certs[0]);

        std::fs::write(&c, "not a pem")?;
        resolver.force_check(&c)?;
        assert_eq!(resolver.current().ok_or("none")?.cert[0], first);

        write(&pair()?)?;
        resolver.force_check(&c)?;
        assert_ne!(resolver.current().ok_or("none")?.cert[0], first);

        // Inline data cannot change: no reloader.
        let (cert, key) = pair()?;
        assert!(
            load(&inline(&cert, "c"), &inline(&key, "k"))?
                .reload
                .is_none()
        );
        Ok(())
    }

    #[test]
    fn relative_paths_resolve_against_the_base() {
        assert_eq!(
            resolve_path(Path::new("/etc/kube"), "certs/a.crt"),
            PathBuf::from("/etc/kube/certs/a.crt")
        );
        assert_eq!(
            resolve_path(Path::new("/etc/kube"), "/abs/a.crt"),
            PathBuf::from("/abs/a.crt")
        );
    }
}
