//! Read-only inspection for operators (`clicktrail wal verify|dump`): never modifies a log,
//! never takes its lock, so it can look at a log a running server is writing.

use std::path::Path;

use crate::recovery::{self, ScanOptions};
use crate::storage::{FsStorage, Storage};
use crate::{segment, snapshot, Error, Lsn, Record, RecoveryMode, RecoveryReport, Snapshot};

/// Record limit used when inspecting: the largest any log can be configured with (a record
/// must fit in a segment of at most 1 GiB), so a log written with any limit reads back.
const INSPECT_MAX_RECORD_BYTES: u32 = 256 << 20;

/// What `verify_log` checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifySummary {
    /// Segment files checked.
    pub segments: usize,
    /// Snapshot files checked (all valid, or verification fails).
    pub snapshots: usize,
    /// Records checked, including those a snapshot already covers.
    pub records: u64,
    /// LSN of the newest snapshot, if any.
    pub snapshot_lsn: Option<Lsn>,
    /// The LSN the next append would get.
    pub next_lsn: Lsn,
    /// What recovery would cut off as a torn tail.
    pub torn_tail_bytes: u64,
    pub torn_tail_records: u64,
}

impl std::fmt::Display for VerifySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} segments, {} records, {} snapshots (newest at LSN {}), next LSN {}, torn tail {} bytes / {} records",
            self.segments,
            self.records,
            self.snapshots,
            self.snapshot_lsn.map_or_else(|| "-".to_string(), |l| l.to_string()),
            self.next_lsn,
            self.torn_tail_bytes,
            self.torn_tail_records,
        )
    }
}

/// Whether `path` is a directory holding a log (at least one segment or snapshot file).
pub fn is_log_dir(path: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(path) else {
        return false;
    };
    entries.flatten().any(|entry| {
        entry.file_name().to_str().is_some_and(|name| {
            segment::parse_segment_name(name).is_some()
                || snapshot::parse_snapshot_name(name).is_some()
        })
    })
}

fn scan_on(storage: &dyn Storage, verify_all: bool) -> Result<recovery::Scan, Error> {
    recovery::scan(
        storage,
        ScanOptions {
            max_record_bytes: INSPECT_MAX_RECORD_BYTES,
            mode: RecoveryMode::Strict,
            verify_all,
        },
    )
}

/// Checks every segment and snapshot in `dir` without modifying anything. `Err(Corruption)`
/// names the first damaged file and offset; a torn tail is not an error (recovery cuts it)
/// but is reported.
pub fn verify_log(dir: &Path) -> Result<VerifySummary, Error> {
    verify_log_on(&FsStorage::open_read_only(dir)?)
}

/// `verify_log` on any storage (e.g. a `SimDisk` holding copies of damaged files).
pub fn verify_log_on(storage: &dyn Storage) -> Result<VerifySummary, Error> {
    let scan = scan_on(storage, true)?;
    let RecoveryReport {
        segments,
        torn_tail_bytes,
        torn_tail_records,
        ..
    } = scan.log.report;
    Ok(VerifySummary {
        segments,
        snapshots: scan.snapshot_files.len(),
        records: scan.records_checked,
        snapshot_lsn: scan.log.snapshot.as_ref().map(|s| s.lsn),
        next_lsn: scan.next_lsn,
        torn_tail_bytes,
        torn_tail_records,
    })
}

/// What recovery would return for `dir` (the newest valid snapshot and every record from
/// it on), read without modifying anything.
pub fn read_log(dir: &Path) -> Result<(Option<Snapshot>, Vec<Record>), Error> {
    read_log_on(&FsStorage::open_read_only(dir)?)
}

/// `read_log` on any storage (e.g. a `SimDisk` holding copies of damaged files).
pub fn read_log_on(storage: &dyn Storage) -> Result<(Option<Snapshot>, Vec<Record>), Error> {
    let scan = scan_on(storage, false)?;
    Ok((scan.log.snapshot, scan.log.records))
}
