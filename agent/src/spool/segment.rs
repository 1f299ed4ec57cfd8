//! Segment files (`000000000042.seg`) and the ack cursor file in the spool directory.

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Suffix of segment files.
const SUFFIX: &str = ".seg";
/// The ack cursor: where the first record not yet acked by the collector starts.
const CURSOR: &str = "cursor.json";
const CURSOR_TMP: &str = "cursor.json.tmp";

/// A place in the spool: a segment and a byte offset in it (a record boundary).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Pos {
    /// Segment id.
    pub segment: u64,
    /// Byte offset in the segment.
    pub offset: u64,
}

/// The file of segment `id`.
pub fn path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:012}{SUFFIX}"))
}

/// Ids of the segment files in `dir`, ascending; other files are ignored.
pub fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(SUFFIX)
            && stem.len() == 12
            && let Ok(id) = stem.parse::<u64>()
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Creates segment `id` (refusing to reuse an existing file) and makes its name durable.
pub fn create(dir: &Path, id: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(path(dir, id))?;
    sync_dir(dir)?;
    Ok(file)
}

/// fsyncs the directory, so created, renamed and deleted names survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The persisted cursor, `None` when there is none yet. A cursor that does not parse is
/// an error: guessing could resend or skip everything.
pub fn load_cursor(dir: &Path) -> io::Result<Option<Pos>> {
    match fs::read(dir.join(CURSOR)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{CURSOR}: {e}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the cursor atomically: temp file, fsync, rename, fsync of the directory.
pub fn store_cursor(dir: &Path, pos: Pos) -> io::Result<()> {
    let tmp = dir.join(CURSOR_TMP);
    let mut file = File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(&pos).map_err(io::Error::other)?)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, dir.join(CURSOR))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_and_foreign_files_are_ignored() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        for id in [42, 7, 1000] {
            create(dir.path(), id)?;
        }
        fs::write(dir.path().join("notes.txt"), "x")?;
        fs::write(dir.path().join("12.seg"), "x")?;
        assert_eq!(list(dir.path())?, vec![7, 42, 1000]);
        assert!(path(dir.path(), 42).ends_with("000000000042.seg"));
        assert!(
            create(dir.path(), 42).is_err(),
            "an existing segment is never reused"
        );
        Ok(())
    }

    #[test]
    fn cursor_round_trip_and_garbage() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        assert_eq!(load_cursor(dir.path())?, None);
        let pos = Pos {
            segment: 3,
            offset: 99,
        };
        store_cursor(dir.path(), pos)?;
        assert_eq!(load_cursor(dir.path())?, Some(pos));
        fs::write(dir.path().join(CURSOR), "{nope")?;
        assert!(load_cursor(dir.path()).is_err());
        Ok(())
    }
}
