//! The agent's own upstream bearer token, re-read from its file whenever the file changes
//! (kubelet rotates projected service-account tokens by swapping the file).

use super::credential::{CredentialError, UpstreamCredential, bearer};
use futures_util::future::BoxFuture;
use http::HeaderValue;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

struct Loaded {
    modified: Option<SystemTime>,
    len: u64,
    token: String,
}

/// A token file, cached until its modification time or size changes.
pub struct TokenFile {
    path: PathBuf,
    loaded: Mutex<Option<Loaded>>,
}

impl TokenFile {
    /// Watches `path`; nothing is read until [`TokenFile::token`].
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            loaded: Mutex::new(None),
        }
    }

    /// The file this token comes from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current token (one `stat` per call; a read only when the file changed).
    pub fn token(&self) -> Result<String, CredentialError> {
        let read_err = |source| CredentialError::Read {
            path: self.path.clone(),
            source,
        };
        let meta = std::fs::metadata(&self.path).map_err(read_err)?;
        let (modified, len) = (meta.modified().ok(), meta.len());
        let mut loaded = match self.loaded.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(l) = loaded.as_ref()
            && l.modified == modified
            && l.len == len
        {
            return Ok(l.token.clone());
        }
        let token = std::fs::read_to_string(&self.path)
            .map_err(read_err)?
            .trim()
            .to_string();
        if token.is_empty() {
            return Err(CredentialError::Empty(self.path.clone()));
        }
        if loaded.is_some() {
            tracing::info!(path = %self.path.display(), "upstream token file changed; using the new token");
        }
        *loaded = Some(Loaded {
            modified,
            len,
            token: token.clone(),
        });
        Ok(token)
    }
}

impl UpstreamCredential for TokenFile {
    fn authorization(&self) -> BoxFuture<'_, Result<Option<HeaderValue>, CredentialError>> {
        // A stat (and, after a change, a read) of a small local file: cheap enough inline.
        let result = self
            .token()
            .and_then(|token| bearer(&token, &self.path.display().to_string()));
        Box::pin(async move { result.map(Some) })
    }

    fn describe(&self) -> String {
        format!("token file {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_is_picked_up() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n")?;
        let file = TokenFile::new(&path);
        assert_eq!(file.token()?, "first");
        // Different length, so the change is seen even within one mtime tick.
        std::fs::write(&path, "second-token")?;
        assert_eq!(file.token()?, "second-token");
        std::fs::write(&path, "")?;
        assert!(matches!(file.token(), Err(CredentialError::Empty(_))));
        std::fs::remove_file(&path)?;
        assert!(matches!(file.token(), Err(CredentialError::Read { .. })));
        Ok(())
    }
}
