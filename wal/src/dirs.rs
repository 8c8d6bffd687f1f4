//! Directories of logs: the few whole-directory operations an owner of several logs needs
//! (list, create, rename, remove, sync), so that code above this crate never touches the
//! filesystem itself. They know nothing of what the logs hold.

use std::io;
use std::path::{Path, PathBuf};

/// Creates `dir` and its parents if needed.
pub fn create_all(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// The subdirectories directly in `dir` as (name, path), names that are not UTF-8
/// skipped; empty when `dir` does not exist.
pub fn subdirs(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if let (Some(name), true) = (entry.file_name().to_str(), path.is_dir()) {
            out.push((name.to_string(), path));
        }
    }
    out.sort();
    Ok(out)
}

/// Removes `dir` and everything in it; a missing `dir` is not an error (idempotent steps
/// of a crash-safe protocol redo removals).
pub fn remove_all(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Renames a directory (atomic within one filesystem).
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)
}

/// Makes creations, renames and removals of `dir`'s entries durable.
pub fn sync(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
