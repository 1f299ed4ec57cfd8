//! The agent's TLS client certificate for the API server (mTLS): a certificate chain and
//! key from PEM files or inline PEM (kubeconfig `client-certificate(-data)`,
//! `client-key(-data)`), checked to belong together when the agent starts. Files are
//! re-read when they change (cert-manager style rotation); new connections then present
//! the new pair, and a broken new pair is logged while the last good one stays.

use super::UpstreamError;
use super::credential::ClientIdentity;
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How often, at most, a handshake looks at the files' modification times.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

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
        (Pem::File(c), Pem::File(k)) => Some(Arc::new(ReloadingClientCert::new(c, k)?)),
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

struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

/// A client certificate from files, re-read when their modification times change
/// (checked on a handshake, at most once per second).
pub struct ReloadingClientCert {
    cert: Pem,
    key: Pem,
    current: Mutex<Loaded>,
}

impl std::fmt::Debug for ReloadingClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingClientCert")
            .field("cert", &self.cert.origin())
            .field("key", &self.key.origin())
            .finish_non_exhaustive()
    }
}

fn mtimes(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (mtime(cert), mtime(key))
}

impl ReloadingClientCert {
    /// Loads the pair once; fails if it is unusable now.
    pub fn new(cert: &Path, key: &Path) -> Result<Self, UpstreamError> {
        let stamp = mtimes(cert, key);
        let (cert, key) = (Pem::File(cert.to_path_buf()), Pem::File(key.to_path_buf()));
        let loaded = Arc::new(certified_key(&cert, &key)?);
        Ok(Self {
            cert,
            key,
            current: Mutex::new(Loaded {
                key: loaded,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The pair to present now, reloading first if the files changed.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        let mut loaded = self.current.lock().ok()?;
        if loaded.checked.elapsed() >= RELOAD_CHECK_INTERVAL {
            loaded.checked = Instant::now();
            let stamp = match (&self.cert, &self.key) {
                (Pem::File(c), Pem::File(k)) => mtimes(c, k),
                _ => loaded.stamp,
            };
            if stamp != loaded.stamp {
                // Remember the stamp either way: a broken file is logged once.
                loaded.stamp = stamp;
                match certified_key(&self.cert, &self.key) {
                    Ok(key) => {
                        tracing::info!(cert = %self.cert.origin(), "reloaded the upstream client certificate");
                        loaded.key = Arc::new(key);
                    }
                    Err(err) => tracing::error!(
                        cert = %self.cert.origin(),
                        error = %crate::authenticate::jwks::error_chain(&err),
                        "new upstream client certificate files are unusable; keeping the previous pair"
                    ),
                }
            }
        }
        Some(loaded.key.clone())
    }
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
        force_check(&resolver, &c)?;
        assert_eq!(resolver.current().ok_or("none")?.cert[0], first);

        write(&pair()?)?;
        force_check(&resolver, &c)?;
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

    /// Makes the next `current()` look at the files (bumps the mtime, skips the interval).
    fn force_check(resolver: &ReloadingClientCert, c: &Path) -> std::io::Result<()> {
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(c)?
            .set_modified(later)?;
        if let Ok(mut loaded) = resolver.current.lock() {
            loaded.checked = Instant::now() - RELOAD_CHECK_INTERVAL * 2;
        }
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
