//! A segmented, memory-mapped, checksummed write-ahead log of opaque records.
//! It knows nothing about clicks or HTTP: it stores and recovers bytes.
//!
//! The API below is the contract the engine is written against; keep it stable.
//!
//! Modules, one noun each: `record` (framing and checksums), `segment` (segment files and
//! their header page), `snapshot` (snapshot files), `storage` (the file trait, real mapped
//! files and the simulated disk), `writer` (appends, group commit, rotation), `group` (group
//! commit for many producer threads), `recovery` (reading a log back), `inspect` (read-only
//! operator tools), `clock` (time for `Interval`).

#![deny(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub mod clock;
pub mod dirs;
mod group;
pub mod inspect;
mod record;
mod recovery;
mod segment;
mod snapshot;
pub mod storage;
mod writer;

pub use clock::{Clock, ManualClock, SystemClock};
pub use group::GroupCommit;
pub use writer::{PendingSnapshot, PendingSync, Trim};

/// Log sequence number: every appended record gets the next one, starting at 1.
pub type Lsn = u64;

/// When appended records become durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `commit()` syncs before returning: group commit, one sync per batch.
    Always,
    /// `commit()` syncs when the last sync is older than this; the owner also calls
    /// `commit()` when idle for `sync_due_in()`, so a crash loses at most this interval.
    Interval(Duration),
    /// Never sync explicitly (the OS writes back when it likes).
    Never,
}

/// What recovery does on a checksum failure before the torn tail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Refuse to open: `Error::Corruption { segment, offset }`.
    #[default]
    Strict,
    /// Drop the corrupt record and what cannot be framed after it, and report exactly
    /// what was dropped in `RecoveryReport::dropped`.
    ///
    /// The damaged bytes stay on disk (a repair never destroys evidence): when records
    /// were dropped, appends continue in a fresh segment, and the owner should write a
    /// snapshot at `next_lsn()` right away so later strict opens never read the damage.
    Lossy,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub segment_size_bytes: u64,
    pub max_record_bytes: u32,
    pub sync: SyncPolicy,
    pub recovery: RecoveryMode,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            segment_size_bytes: 64 << 20,
            max_record_bytes: 1 << 20,
            sync: SyncPolicy::Always,
            recovery: RecoveryMode::Strict,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("corrupt log: {segment}, offset {offset}: {reason}")]
    Corruption {
        segment: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("log I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A sync failed earlier; nothing more can be appended until the process recovers.
    #[error("log poisoned by an earlier failure: {0}")]
    Poisoned(String),
    #[error("record of {len} bytes exceeds the maximum of {max}")]
    RecordTooLarge { len: usize, max: u32 },
    /// Options or arguments the log cannot work with (e.g. a record limit that does not
    /// fit in a segment, a snapshot LSN beyond the log).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// One recovered record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub lsn: Lsn,
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// A snapshot blob handed to `write_snapshot`; it covers every record with an LSN below `lsn`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub lsn: Lsn,
    pub data: Vec<u8>,
}

/// What recovery found and what it dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    pub torn_tail_bytes: u64,
    pub torn_tail_records: u64,
    /// Lossy mode only: (segment, offset, bytes) of each dropped range.
    pub dropped: Vec<(PathBuf, u64, u64)>,
    /// Snapshot files that failed their checksum and were skipped for an older one.
    pub damaged_snapshots: Vec<PathBuf>,
}

/// The newest valid snapshot and every record after it, in LSN order.
#[derive(Debug, Default)]
pub struct Recovered {
    pub snapshot: Option<Snapshot>,
    pub records: Vec<Record>,
    pub report: RecoveryReport,
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    pub bytes_appended: u64,
    pub records_appended: u64,
    pub syncs: u64,
    /// Records covered by the most recent sync.
    pub last_sync_batch_records: u64,
}

/// The log of one owner (one shard). Single writer: the owner appends a batch, then
/// calls `commit()` once, or hands the sync to another thread with `begin_sync()`.
pub struct Wal {
    inner: writer::Writer,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("next_lsn", &self.next_lsn())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Wal {
    /// Opens (creating if needed) the log in `dir` on real files, recovering what is there.
    /// The directory is locked against a second writer for the log's lifetime.
    pub fn open(dir: &Path, options: Options) -> Result<(Wal, Recovered), Error> {
        let storage = storage::FsStorage::open(dir)?;
        Wal::open_on(Arc::new(storage), options)
    }

    /// Opens the log on any storage, e.g. a `storage::SimDisk` with faults planned.
    pub fn open_on(
        storage: Arc<dyn storage::Storage>,
        options: Options,
    ) -> Result<(Wal, Recovered), Error> {
        let (inner, recovered) = writer::Writer::open(storage, options)?;
        Ok((Wal { inner }, recovered))
    }

    /// Replaces the clock behind `SyncPolicy::Interval` (tests use `ManualClock`).
    pub fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.inner.set_clock(clock);
    }

    /// Appends a record; not durable until a `commit()`/`sync()` covers it. Fails with
    /// `RecordTooLarge` above `max_record_bytes`, `Poisoned` after a failed sync, and `Io`
    /// (e.g. `ENOSPC`) when a new segment cannot be allocated; in that last case nothing was
    /// appended and a later append may succeed.
    pub fn append(&mut self, kind: u8, payload: &[u8]) -> Result<Lsn, Error> {
        self.inner.append(kind, payload)
    }

    /// Makes appended records durable as the sync policy says. Under `Always`, every record
    /// appended before the call is durable when it returns `Ok`, with one sync for the
    /// whole batch. A failed sync returns the `Io` error and poisons the log: every later
    /// call returns `Poisoned`.
    pub fn commit(&mut self) -> Result<(), Error> {
        self.inner.commit()
    }

    /// Makes every appended record durable now, whatever the policy (shutdown).
    pub fn sync(&mut self) -> Result<(), Error> {
        self.inner.sync()
    }

    /// Group commit off the owner's thread: takes everything appended and not yet synced
    /// as a [`PendingSync`] that another thread runs while the owner keeps appending.
    /// When its `run()` returns `Ok(lsn)`, every record up to `lsn` is durable; when it
    /// fails, the log is poisoned as after a failed `commit()`. `None` when nothing is
    /// waiting. Rotation and `sync()` still sync synchronously, covering any range handed
    /// out whose sync is not known to be complete.
    pub fn begin_sync(&mut self) -> Result<Option<PendingSync>, Error> {
        self.inner.begin_sync()
    }

    /// The highest LSN known durable (covered by a completed sync).
    pub fn durable_lsn(&self) -> Lsn {
        self.inner.durable_lsn()
    }

    /// Under `Interval`, how long until an idle owner should call `commit()`; `None` under
    /// the other policies, and when nothing is waiting to be synced.
    pub fn sync_due_in(&self) -> Option<Duration> {
        self.inner.sync_due_in()
    }

    /// The policy the log was opened with.
    pub fn sync_policy(&self) -> SyncPolicy {
        self.inner.sync_policy()
    }

    /// The LSN the next append will get.
    pub fn next_lsn(&self) -> Lsn {
        self.inner.next_lsn()
    }

    /// Writes a snapshot covering every record below `lsn` atomically, keeps the two
    /// newest, and deletes segments wholly below the older of the two kept (so the older
    /// one stays a complete fallback if the newest is ever found damaged). Syncs the log
    /// first. `lsn` must be at most `next_lsn()`.
    pub fn write_snapshot(&mut self, lsn: Lsn, data: &[u8]) -> Result<(), Error> {
        self.inner.write_snapshot(lsn, data)
    }

    /// [`Wal::write_snapshot`] in two steps, for a snapshot too large to encode or write
    /// on the owner's thread: syncs the log and returns a [`PendingSnapshot`] for another
    /// thread to write, with bytes it may encode there, while the owner keeps appending.
    /// Call [`Wal::finish_snapshot`] with its LSN once it has run, to drop the older
    /// snapshot and segments it replaces. One at a time: begin the next after finishing
    /// this one.
    pub fn begin_snapshot(&mut self, lsn: Lsn) -> Result<PendingSnapshot, Error> {
        self.inner.begin_snapshot(lsn)
    }

    /// After a [`PendingSnapshot`] ran successfully: keeps the two newest snapshots and
    /// returns what neither needs as a [`Trim`], to delete on any thread (as
    /// [`Wal::write_snapshot`] does at once).
    pub fn finish_snapshot(&mut self, lsn: Lsn) -> Result<Trim, Error> {
        self.inner.finish_snapshot(lsn)
    }

    pub fn stats(&self) -> WalStats {
        self.inner.stats()
    }
}
