//! `--policy-cache`: the last good policy on disk, written atomically (temp file, fsync,
//! rename) so a crash leaves the old or the new version, never half of one.

use gatehouse_common::policy::Policy;
use std::io::Write;
use std::path::Path;

/// Why the cache could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The cached text is no valid policy (it is ignored).
    #[error("{0}")]
    Invalid(#[from] gatehouse_common::policy::PolicyError),
}

/// The cached policy, `None` when there is no cache file yet.
pub fn load(path: &Path) -> Result<Option<Policy>, CacheError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(Policy::parse(&text)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Replaces the cache with `policy`'s source.
pub fn store(path: &Path, policy: &Policy) -> Result<(), CacheError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(policy.source.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = dir
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state/policy.yaml");
        assert!(load(&path)?.is_none());
        let policy = Policy::parse(
            "apiVersion: gatehouse.dev/v1\nkind: Policy\nrules:\n  - name: a\n    subjects: {users: [x]}\n    action: allow\n",
        )?;
        store(&path, &policy)?;
        let back = load(&path)?.map(|p| p.version);
        assert_eq!(back, Some(policy.version));
        std::fs::write(&path, "kind: nope")?;
        assert!(load(&path).is_err());
        Ok(())
    }
}
