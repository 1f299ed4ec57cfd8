//! Per-issuer+client token cache of the `gatehouse` CLI (files with mode 0600, atomic writes).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Errors reading or writing the token cache. Messages never contain token material.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Neither `$XDG_CACHE_HOME` nor `$HOME` is set.
    #[error("cannot find a cache directory: set XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    /// Filesystem error on the given path.
    #[error("token cache {path}: {source}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The cache file is not valid JSON of the expected shape.
    #[error("token cache {path} is corrupt; run `gatehouse logout` then `gatehouse login`")]
    Corrupt {
        /// File involved.
        path: PathBuf,
    },
}

/// Tokens cached for one issuer and client id.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CachedTokens {
    /// Issuer URL the tokens came from.
    pub issuer: String,
    /// OAuth client id.
    pub client_id: String,
    /// The OIDC ID token kubectl presents to the agent.
    pub id_token: String,
    /// Expiry of `id_token`.
    pub expires_at: DateTime<Utc>,
    /// Refresh token, when the issuer handed one out.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

// Hand-written so a stray `{:?}` can never print a token.
impl std::fmt::Debug for CachedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedTokens")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("expires_at", &self.expires_at)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

impl CachedTokens {
    /// Whether the ID token is still usable `skew` from now (kubectl caches it until expiry).
    pub fn id_token_valid(&self, now: DateTime<Utc>, skew: chrono::Duration) -> bool {
        self.expires_at > now + skew
    }
}

/// The cache directory: `$XDG_CACHE_HOME/gatehouse`, else `~/.cache/gatehouse`.
pub fn default_dir() -> Result<PathBuf, CacheError> {
    dir_from(
        std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

fn dir_from(xdg: Option<PathBuf>, home: Option<PathBuf>) -> Result<PathBuf, CacheError> {
    // XDG says a relative value must be ignored.
    match (xdg.filter(|p| p.is_absolute()), home) {
        (Some(x), _) => Ok(x.join("gatehouse")),
        (None, Some(h)) => Ok(h.join(".cache").join("gatehouse")),
        (None, None) => Err(CacheError::NoCacheDir),
    }
}

/// A token cache rooted at one directory.
#[derive(Debug, Clone)]
pub struct TokenCache {
    dir: PathBuf,
}

impl TokenCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// File holding the tokens for `issuer` + `client_id`: a name derived from a hash, so
    /// any issuer URL maps to a safe, fixed-length file name.
    pub fn path_for(&self, issuer: &str, client_id: &str) -> PathBuf {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(issuer.trim_end_matches('/').as_bytes());
        h.update([0u8]);
        h.update(client_id.as_bytes());
        let digest = h.finalize();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("tokens-{hex}.json"))
    }

    /// Cached tokens, or `None` when nothing is cached.
    pub fn load(&self, issuer: &str, client_id: &str) -> Result<Option<CachedTokens>, CacheError> {
        let path = self.path_for(issuer, client_id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Io { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|_| CacheError::Corrupt { path })
    }

    /// Store tokens: written to a 0600 temp file in the same directory, then renamed over
    /// the old file, so concurrent kubectl-driven invocations never see a half-written file.
    pub fn store(&self, tokens: &CachedTokens) -> Result<(), CacheError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { path, source }
        };
        create_private_dir(&self.dir).map_err(io(&self.dir))?;
        let path = self.path_for(&tokens.issuer, &tokens.client_id);
        let json = serde_json::to_vec_pretty(tokens).map_err(|e| CacheError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(io(&self.dir))?;
        // NamedTempFile is created 0600 on Unix; set it explicitly anyway.
        set_private(tmp.path()).map_err(io(tmp.path()))?;
        std::io::Write::write_all(&mut tmp, &json).map_err(io(&path))?;
        tmp.as_file().sync_all().map_err(io(&path))?;
        tmp.persist(&path).map_err(|e| CacheError::Io {
            path: path.clone(),
            source: e.error,
        })?;
        Ok(())
    }

    /// Blocks until this process holds the exclusive lock for `issuer` + `client_id` (a
    /// `flock` on a `.lock` file beside the tokens); released when the guard drops. Taken
    /// around a refresh so concurrent kubectl invocations refresh once, not once each.
    pub fn lock(&self, issuer: &str, client_id: &str) -> Result<CacheLock, CacheError> {
        create_private_dir(&self.dir).map_err(|source| CacheError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let path = self.path_for(issuer, client_id).with_extension("lock");
        let io = |source| CacheError::Io {
            path: path.clone(),
            source,
        };
        let file = open_lock_file(&path).map_err(io)?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| io(std::io::Error::from(errno)))?;
        Ok(CacheLock { _lock: lock })
    }

    /// Delete the cached tokens; `Ok(false)` when there were none.
    pub fn remove(&self, issuer: &str, client_id: &str) -> Result<bool, CacheError> {
        let path = self.path_for(issuer, client_id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(CacheError::Io { path, source }),
        }
    }
}

/// Holds the refresh lock of one issuer + client until dropped.
#[derive(Debug)]
pub struct CacheLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

fn open_lock_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn set_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn set_private(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(issuer: &str) -> CachedTokens {
        CachedTokens {
            issuer: issuer.into(),
            client_id: "gatehouse".into(),
            id_token: "secret-id-token".into(),
            expires_at: Utc::now() + chrono::Duration::minutes(5),
            refresh_token: Some("secret-refresh".into()),
        }
    }

    #[test]
    fn store_load_remove_round_trip_with_mode_0600() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let cache = TokenCache::new(dir.path().join("gatehouse"));
        assert_eq!(cache.load("https://i", "gatehouse")?, None);
        let t = sample("https://i");
        cache.store(&t)?;
        assert_eq!(cache.load("https://i", "gatehouse")?, Some(t.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(cache.path_for("https://i", "gatehouse"))?
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Overwrite is atomic and leaves no temp files behind.
        cache.store(&t)?;
        assert_eq!(std::fs::read_dir(dir.path().join("gatehouse"))?.count(), 1);
        assert!(cache.remove("https://i", "gatehouse")?);
        assert!(!cache.remove("https://i", "gatehouse")?);
        Ok(())
    }

    #[test]
    fn issuers_and_clients_get_separate_files() {
        let cache = TokenCache::new("/c");
        assert_ne!(
            cache.path_for("https://a", "x"),
            cache.path_for("https://b", "x")
        );
        assert_ne!(
            cache.path_for("https://a", "x"),
            cache.path_for("https://a", "y")
        );
        assert_eq!(
            cache.path_for("https://a/", "x"),
            cache.path_for("https://a", "x")
        );
    }

    #[test]
    fn corrupt_file_is_a_clear_error() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let cache = TokenCache::new(dir.path());
        std::fs::write(cache.path_for("https://i", "c"), b"{not json")?;
        let err = cache.load("https://i", "c").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("corrupt")));
        Ok(())
    }

    #[test]
    fn lock_is_exclusive_between_holders() -> anyhow::Result<()> {
        use nix::fcntl::{Flock, FlockArg};
        let dir = tempfile::tempdir()?;
        let cache = TokenCache::new(dir.path().join("g"));
        let path = cache.path_for("https://i", "c").with_extension("lock");
        let try_other = || {
            let file = open_lock_file(&path)?;
            Ok::<_, std::io::Error>(Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok())
        };
        let held = cache.lock("https://i", "c")?;
        assert!(
            !try_other()?,
            "a second holder got the lock while it was held"
        );
        drop(held);
        assert!(try_other()?, "the lock was not released on drop");
        Ok(())
    }

    #[test]
    fn debug_never_shows_tokens() {
        let s = format!("{:?}", sample("https://i"));
        assert!(!s.contains("secret"), "{s}");
    }

    #[test]
    fn cache_dir_prefers_absolute_xdg() -> anyhow::Result<()> {
        assert_eq!(
            dir_from(Some("/x".into()), Some("/h".into()))?,
            PathBuf::from("/x/gatehouse")
        );
        assert_eq!(
            dir_from(Some("rel".into()), Some("/h".into()))?,
            PathBuf::from("/h/.cache/gatehouse")
        );
        assert!(dir_from(None, None).is_err());
        Ok(())
    }
}
