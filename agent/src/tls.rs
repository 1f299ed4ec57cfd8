//! Reads PEM files into rustls server and client configurations (ring provider), and
//! keeps the listener's certificate fresh: [`ReloadingCert`] re-reads the files when they
//! change, so cert-manager style rotation needs no restart.

use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

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

/// The PEM private key in `key_file`.
fn read_key(key_file: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::Pem {
        what: "private key",
        path: key_file.to_path_buf(),
        source,
    })
}

/// The server config the agent's listener presents: `h2` and `http/1.1` by ALPN.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<rustls::ServerConfig> {
    let certs = read_certs(cert_file)?;
    let key = read_key(key_file)?;
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

/// How often, at most, a handshake looks at the certificate files' modification times.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Loads the certificate chain and key into a rustls [`CertifiedKey`].
pub fn load_certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey> {
    let certs = read_certs(cert_file)?;
    let key = read_key(key_file)?;
    let signing = provider().key_provider.load_private_key(key)?;
    let certified = CertifiedKey::new(certs, signing);
    // A key that does not match the certificate would fail every handshake.
    certified.keys_match()?;
    Ok(certified)
}

struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

/// Loads a certificate chain and key from two files into a checked [`CertifiedKey`].
pub type PairLoader<E> = fn(&Path, &Path) -> std::result::Result<CertifiedKey, E>;

/// A certificate + key pair read from files and re-read when their modification times
/// change (checked on a handshake, at most once per second), so cert-manager style
/// rotation needs no restart. Broken new files are logged and the last good pair stays.
/// The listener's certificate ([`ReloadingCert`]) and the agent's upstream client
/// certificate share it.
pub struct ReloadingPair<E> {
    cert_file: PathBuf,
    key_file: PathBuf,
    /// What the pair is, for logs ("TLS certificate", "upstream client certificate").
    what: &'static str,
    load: PairLoader<E>,
    current: Mutex<Loaded>,
}

/// The listener's certificate.
pub type ReloadingCert = ReloadingPair<TlsError>;

impl<E> std::fmt::Debug for ReloadingPair<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingPair")
            .field("what", &self.what)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

fn mtimes(cert_file: &Path, key_file: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (mtime(cert_file), mtime(key_file))
}

impl ReloadingCert {
    /// The listener's pair; fails if the files are unusable at start (fail closed).
    pub fn new(cert_file: &Path, key_file: &Path) -> Result<Self> {
        Self::load(cert_file, key_file, "TLS certificate", load_certified_key)
    }
}

impl<E: std::error::Error> ReloadingPair<E> {
    /// Loads the pair once with `load`; fails if the files are unusable now.
    pub fn load(
        cert_file: &Path,
        key_file: &Path,
        what: &'static str,
        load: PairLoader<E>,
    ) -> std::result::Result<Self, E> {
        let stamp = mtimes(cert_file, key_file);
        let key = Arc::new(load(cert_file, key_file)?);
        Ok(Self {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            what,
            load,
            current: Mutex::new(Loaded {
                key,
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
            let stamp = mtimes(&self.cert_file, &self.key_file);
            if stamp != loaded.stamp {
                // Remember the stamp either way: a broken file is logged once, not per handshake.
                loaded.stamp = stamp;
                match (self.load)(&self.cert_file, &self.key_file) {
                    Ok(key) => {
                        tracing::info!(cert = %self.cert_file.display(), "reloaded the {}", self.what);
                        loaded.key = Arc::new(key);
                    }
                    Err(err) => tracing::error!(
                        cert = %self.cert_file.display(),
                        error = %crate::authenticate::jwks::error_chain(&err),
                        "new {} files are unusable; keeping the previous pair",
                        self.what
                    ),
                }
            }
        }
        Some(loaded.key.clone())
    }

    /// Makes the next `current()` look at the files: bumps `touched`'s mtime and skips the
    /// once-per-second interval.
    #[cfg(test)]
    pub(crate) fn force_check(&self, touched: &Path) -> std::io::Result<()> {
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(touched)?
            .set_modified(later)?;
        if let Ok(mut loaded) = self.current.lock() {
            loaded.checked = Instant::now() - RELOAD_CHECK_INTERVAL * 2;
        }
        Ok(())
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// The listener's server config: certificate from files with hot reload, ALPN `h2` and
/// `http/1.1`, and, with `client_ca_file`, optional client certificates verified against
/// that CA (clients without a certificate still connect, so OIDC users are unaffected).
pub fn listener_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> Result<rustls::ServerConfig> {
    let resolver = Arc::new(ReloadingCert::new(cert_file, key_file)?);
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(read_certs(path)?);
            if added == 0 {
                return Err(TlsError::NoRoots {
                    path: path.to_path_buf(),
                });
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
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

    fn write_pair(dir: &Path, name: &str) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let key = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(vec![name.into()])?.self_signed(&key)?;
        std::fs::write(dir.join("c.pem"), cert.pem())?;
        std::fs::write(dir.join("k.pem"), key.serialize_pem())?;
        Ok(())
    }

    #[test]
    fn reload_picks_up_new_files_and_keeps_the_last_good_pair()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        write_pair(dir.path(), "first.test")?;
        let resolver = ReloadingCert::new(&c, &k)?;
        let first = resolver.current().ok_or("no key")?.cert[0].clone();

        // Broken files: the old pair stays.
        std::fs::write(&c, "not a pem")?;
        resolver.force_check(&c)?;
        assert_eq!(resolver.current().ok_or("no key")?.cert[0], first);

        // A good new pair replaces it.
        write_pair(dir.path(), "second.test")?;
        resolver.force_check(&c)?;
        let second = resolver.current().ok_or("no key")?.cert[0].clone();
        assert_ne!(second, first);
        Ok(())
    }

    #[test]
    fn mismatched_key_is_refused() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        write_pair(dir.path(), "a.test")?;
        let other = rcgen::KeyPair::generate()?;
        std::fs::write(dir.path().join("k.pem"), other.serialize_pem())?;
        assert!(load_certified_key(&dir.path().join("c.pem"), &dir.path().join("k.pem")).is_err());
        Ok(())
    }
}
