//! Storing a body: written to a temp file beside its final name, then renamed, on the
//! blocking pool so that disk waits never stall the event loop.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Ending of in-progress files; a file with it is never a finished batch.
pub const TEMP_SUFFIX: &str = ".part";

/// Whether `name` is one of our in-progress temp files.
pub fn is_temp_file(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TEMP_SUFFIX)
}

/// The temp file `name` is written to before it is renamed into place.
pub fn temp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.{}{TEMP_SUFFIX}", std::process::id()))
}

/// Writes `body` to `dir/name` atomically: readers see the whole file or none.
pub async fn save(dir: PathBuf, name: String, body: bytes::Bytes) -> io::Result<()> {
    tokio::task::spawn_blocking(move || write_atomic(&dir, &name, &body))
        .await
        .map_err(io::Error::other)?
}

/// Writes `body` to `dir/name` through a temp file beside it and a rename; blocking.
pub fn write_atomic(dir: &Path, name: &str, body: &[u8]) -> io::Result<()> {
    let temp = temp_path(dir, name);
    let result = fs::write(&temp, body).and_then(|()| fs::rename(&temp, dir.join(name)));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_leaves_only_the_final_file() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "batch0-10.json", b"{}").unwrap();
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["batch0-10.json"]);
        assert_eq!(fs::read(dir.path().join("batch0-10.json")).unwrap(), b"{}");
    }

    #[test]
    fn failed_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // The final name is a directory, so the rename fails.
        fs::create_dir(dir.path().join("taken")).unwrap();
        fs::write(dir.path().join("taken/x"), b"").unwrap();
        assert!(write_atomic(dir.path(), "taken", b"{}").is_err());
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1);
    }

    #[test]
    fn temp_files_are_recognised() {
        assert!(is_temp_file(".batch0-10.json.123.part"));
        assert!(!is_temp_file("batch0-10.json"));
    }
}
