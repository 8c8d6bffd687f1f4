//! The data directory's layout and the shard-count change (resharding) protocol.
//!
//! ```text
//! data_dir/control/          the control log (catalog, fingerprint key, reshard markers)
//! data_dir/shard-000/ ...    one log per shard
//! data_dir/reshard-staging/  new shards being built during a shard-count change
//! ```
//!
//! This module is the one place where the engine manages directories itself (create,
//! list, rename, remove); every byte inside them goes through `wal`.
//!
//! Resharding, when the configured count differs from the shard directories on disk:
//! 1. Remove any leftover staging directory: a reshard that never reached its commit
//!    point is simply redone from the old shards, which are untouched until then.
//! 2. Recover every old shard, re-route each click, conversion, impression entry and
//!    counter to `route_key % new_count`, and write each new shard as a fresh log holding
//!    one snapshot in `reshard-staging/shard-NNN`, synced.
//! 3. Commit point: append `ReshardCommitted { shards }` to the control log and sync.
//! 4. Finish (idempotent, redone at start-up after a crash until step 5 is recorded): for
//!    each `shard-NNN` still in staging, remove the old top-level `shard-NNN` and rename the
//!    staged one into its place; remove top-level shards numbered `>= shards`; sync the
//!    directory; remove the staging directory.
//! 5. Append `ReshardDone { shards }`.
//!
//! A crash before 3 leaves the old shards as they were; a crash after 3 is finished by
//! the next start, because a staged shard is renamed only after its old namesake is gone,
//! and a name still in staging always means "not moved yet".

use std::io;
use std::path::{Path, PathBuf};

/// Most shards: route keys are 16 bits, and every shard costs a thread and a log.
pub const MAX_SHARDS: usize = 1024;

pub fn control_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("control")
}

pub fn shard_dir(data_dir: &Path, index: usize) -> PathBuf {
    data_dir.join(format!("shard-{index:03}"))
}

pub fn staging_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("reshard-staging")
}

pub fn staged_shard_dir(data_dir: &Path, index: usize) -> PathBuf {
    staging_dir(data_dir).join(format!("shard-{index:03}"))
}

fn io_error(path: &Path, source: io::Error) -> crate::Error {
    crate::Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the data directory if needed.
pub fn ensure_data_dir(data_dir: &Path) -> Result<(), crate::Error> {
    std::fs::create_dir_all(data_dir).map_err(|e| io_error(data_dir, e))
}

/// The indexes of the `shard-NNN` directories directly in `dir`, sorted.
fn shard_indexes(dir: &Path) -> Result<Vec<usize>, crate::Error> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_error(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix("shard-")
            .and_then(|n| n.parse::<usize>().ok())
        {
            if entry.path().is_dir() {
                out.push(n);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// How many shards the data directory holds (0 when new). Refuses gaps: a missing shard
/// would silently lose its records.
pub fn existing_shards(data_dir: &Path) -> Result<usize, crate::Error> {
    let found = shard_indexes(data_dir)?;
    if found.iter().enumerate().any(|(i, &n)| i != n) {
        return Err(crate::Error::Config(format!(
            "{}: shard directories are not numbered 0..{}: {found:?}",
            data_dir.display(),
            found.len()
        )));
    }
    Ok(found.len())
}

/// Removes a staging directory left by a reshard that never committed.
pub fn clear_staging(data_dir: &Path) -> Result<(), crate::Error> {
    let staging = staging_dir(data_dir);
    match std::fs::remove_dir_all(&staging) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(&staging, e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), crate::Error> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error(dir, e))
}

/// Step 4 of the protocol: moves the staged shards into place. Idempotent.
pub fn finish_reshard(data_dir: &Path, shards: usize) -> Result<(), crate::Error> {
    for i in shard_indexes(&staging_dir(data_dir))? {
        let top = shard_dir(data_dir, i);
        match std::fs::remove_dir_all(&top) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&top, e)),
        }
        let staged = staged_shard_dir(data_dir, i);
        std::fs::rename(&staged, &top).map_err(|e| io_error(&staged, e))?;
    }
    for i in shard_indexes(data_dir)? {
        if i >= shards {
            let old = shard_dir(data_dir, i);
            std::fs::remove_dir_all(&old).map_err(|e| io_error(&old, e))?;
        }
    }
    sync_dir(data_dir)?;
    clear_staging(data_dir)?;
    sync_dir(data_dir)
}
