//! The data directory's layout and the shard-count change (resharding) protocol.
//!
//! ```text
//! data_dir/control/          the control log (catalog, fingerprint key, reshard markers)
//! data_dir/shard-000/ ...    one log per shard
//! data_dir/reshard-staging/  new shards being built during a shard-count change
//! ```
//!
//! This module decides which directories exist; it creates, lists, renames and removes
//! them through `wal::dirs`, and every byte inside them goes through `wal` too.
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
use std::sync::Arc;

/// Where a log's files live, given its directory: real memory-mapped files in production
/// ([`real_files`]); tests may plug in the wal crate's simulated disk to inject faults.
pub type StorageFactory =
    Arc<dyn Fn(&Path) -> io::Result<Arc<dyn wal::storage::Storage>> + Send + Sync>;

/// Logs on real files (each directory locked against a second writer).
pub fn real_files() -> StorageFactory {
    Arc::new(|dir: &Path| {
        let storage = wal::storage::FsStorage::open(dir)?;
        Ok(Arc::new(storage) as Arc<dyn wal::storage::Storage>)
    })
}

/// Opens (creating if needed) the log in `dir` and recovers it.
pub fn open_log(
    storage: &StorageFactory,
    dir: &Path,
    options: wal::Options,
) -> Result<(wal::Wal, wal::Recovered), crate::Error> {
    let files = storage(dir).map_err(|e| io_error(dir, e))?;
    let (wal, recovered) = wal::Wal::open_on(files, options)?;
    // Only a repair (lossy recovery) drops anything; say exactly what, once per range.
    for (segment, offset, bytes) in &recovered.report.dropped {
        tracing::warn!(
            log = %dir.display(),
            segment = %segment.display(),
            offset,
            bytes,
            "repair dropped a damaged range of the log"
        );
    }
    Ok((wal, recovered))
}

/// Logs on simulated disks, one per log directory: for tests that inject faults or cut
/// the power under a whole engine (`Engine::open_on(.., disks.factory())`).
#[derive(Clone, Default)]
pub struct SimulatedDisks(
    Arc<std::sync::Mutex<std::collections::HashMap<PathBuf, wal::storage::SimDisk>>>,
);

impl SimulatedDisks {
    fn disks(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<PathBuf, wal::storage::SimDisk>> {
        // A panic while holding the lock only happens in a failing test; keep its data.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn factory(&self) -> StorageFactory {
        let disks = self.clone();
        Arc::new(move |dir: &Path| {
            let disk = disks.disks().entry(dir.to_path_buf()).or_default().clone();
            Ok(Arc::new(disk) as Arc<dyn wal::storage::Storage>)
        })
    }

    /// Plans the same faults on every disk opened so far.
    pub fn set_faults(&self, plan: wal::storage::FaultPlan) {
        for disk in self.disks().values() {
            disk.set_faults(plan.clone());
        }
    }

    /// Every disk as a power loss would leave it (and with no faults planned).
    pub fn crashed(&self, seed: u64) -> SimulatedDisks {
        let map = self
            .disks()
            .iter()
            .map(|(k, d)| (k.clone(), d.crash(seed)))
            .collect();
        SimulatedDisks(Arc::new(std::sync::Mutex::new(map)))
    }
}

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
    wal::dirs::create_all(data_dir).map_err(|e| io_error(data_dir, e))
}

/// The indexes of the `shard-NNN` directories directly in `dir`, sorted.
fn shard_indexes(dir: &Path) -> Result<Vec<usize>, crate::Error> {
    let mut out = Vec::new();
    for (name, _) in wal::dirs::subdirs(dir).map_err(|e| io_error(dir, e))? {
        if let Some(n) = name
            .strip_prefix("shard-")
            .and_then(|n| n.parse::<usize>().ok())
        {
            out.push(n);
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
    wal::dirs::remove_all(&staging).map_err(|e| io_error(&staging, e))
}

fn sync_dir(dir: &Path) -> Result<(), crate::Error> {
    wal::dirs::sync(dir).map_err(|e| io_error(dir, e))
}

/// Step 4 of the protocol: moves the staged shards into place. Idempotent.
pub fn finish_reshard(data_dir: &Path, shards: usize) -> Result<(), crate::Error> {
    for i in shard_indexes(&staging_dir(data_dir))? {
        let top = shard_dir(data_dir, i);
        wal::dirs::remove_all(&top).map_err(|e| io_error(&top, e))?;
        let staged = staged_shard_dir(data_dir, i);
        wal::dirs::rename(&staged, &top).map_err(|e| io_error(&staged, e))?;
    }
    for i in shard_indexes(data_dir)? {
        if i >= shards {
            let old = shard_dir(data_dir, i);
            wal::dirs::remove_all(&old).map_err(|e| io_error(&old, e))?;
        }
    }
    sync_dir(data_dir)?;
    clear_staging(data_dir)?;
    sync_dir(data_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(dir: &Path, tag: &str) {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(dir.join("tag"), tag).expect("write");
    }

    fn tag(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("tag")).expect("tag")
    }

    /// Every crash point of step 4 (3 old shards -> 2 new): finishing again from there
    /// gives the same result.
    #[test]
    fn finishing_a_reshard_is_idempotent_from_every_crash_point() {
        for moved in 0..=2 {
            for old_removed in [false, true] {
                let data = tempfile::tempdir().expect("tempdir");
                let d = data.path();
                for i in 0..3 {
                    make(&shard_dir(d, i), "old");
                }
                for i in 0..2 {
                    make(&staged_shard_dir(d, i), "new");
                }
                // Simulate a crash after `moved` renames (and maybe the removal of shard-002).
                for i in 0..moved {
                    std::fs::remove_dir_all(shard_dir(d, i)).expect("rm");
                    std::fs::rename(staged_shard_dir(d, i), shard_dir(d, i)).expect("mv");
                }
                if old_removed && moved == 2 {
                    std::fs::remove_dir_all(shard_dir(d, 2)).expect("rm");
                }
                finish_reshard(d, 2).expect("finish");
                finish_reshard(d, 2).expect("finish again");
                assert_eq!(existing_shards(d).expect("count"), 2, "moved {moved}");
                for i in 0..2 {
                    assert_eq!(tag(&shard_dir(d, i)), "new");
                }
                assert!(!staging_dir(d).exists());
            }
        }
    }

    #[test]
    fn gaps_in_shard_numbers_are_refused() {
        let data = tempfile::tempdir().expect("tempdir");
        make(&shard_dir(data.path(), 0), "x");
        make(&shard_dir(data.path(), 2), "x");
        assert!(existing_shards(data.path()).is_err());
    }
}
