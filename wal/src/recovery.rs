//! Recovery: reads a log directory and decides what it holds, without changing anything.
//!
//! The result (`Scan`) says which snapshot and records are valid, where appends continue,
//! and which leftovers (temp files, unused prepared segments, a torn tail) the writer must
//! clear before appending. `Wal::open` applies it; the operator tools only read it.
//!
//! What counts as damage:
//! - Every segment but the last was synced in full before the next one received a byte, so
//!   any checksum failure in it is corruption.
//! - In the last segment, damage followed only by records that were never known durable is
//!   a torn tail (a crash in the unsynced window): cut and reported. Damage followed by a
//!   record whose header says an LSN at or after the damage was already durable is
//!   corruption: an acknowledged record was lost.

use std::path::PathBuf;

use crate::record::{self, FrameError};
use crate::segment::{self, SegmentHeader, HEADER_PAGE_BYTES, MAX_SEGMENT_BYTES};
use crate::snapshot;
use crate::storage::Storage;
use crate::{Error, Lsn, Record, Recovered, RecoveryMode, Snapshot};

/// Largest snapshot file read; a bigger one is reported as damaged rather than loaded.
/// Snapshots hold a shard's whole state; 1 GiB is far above any expected shard.
pub(crate) const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

/// A segment in use (its base LSN assigned).
#[derive(Clone, Debug)]
pub(crate) struct SegmentMeta {
    pub name: String,
    pub header: SegmentHeader,
}

/// Everything recovery found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub log: Recovered,
    /// Segments in use, in order; the last one is where appends continue.
    pub segments: Vec<SegmentMeta>,
    /// LSNs of every snapshot file, valid or not, ascending.
    pub snapshot_files: Vec<Lsn>,
    /// Files to delete before appending: temp files and unused or torn trailing segments.
    pub discard: Vec<String>,
    /// A trailing prepared segment that is still clean (all zero after its header): the
    /// writer keeps it as the next segment instead of allocating a new one.
    pub reusable: Option<(String, SegmentHeader)>,
    /// The LSN the next append gets.
    pub next_lsn: Lsn,
    /// Where appends continue in the last segment.
    pub tail_offset: usize,
    /// End of the non-zero bytes after `tail_offset` in the last segment, to be zeroed so
    /// stale frames can never follow new ones.
    pub tail_dirty_end: usize,
    /// Sequence number for the next new segment.
    pub next_seq: u64,
    /// Records validated, including those below the snapshot (`verify_all` only).
    pub records_checked: u64,
}

/// How to scan.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScanOptions {
    pub max_record_bytes: u32,
    pub mode: RecoveryMode,
    /// Operator verification: check every segment and snapshot, even those recovery would
    /// skip, and treat any damaged snapshot as corruption.
    pub verify_all: bool,
}

fn corruption(path: PathBuf, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corruption {
        segment: path,
        offset,
        reason: reason.into(),
    }
}

/// End of the last non-zero byte of `bytes[from..]`, rounded up to the record alignment and
/// capped at the length; `from` if all zero. Compares whole blocks against zeros first
/// (memcmp), since a segment is mostly an all-zero preallocated tail.
fn nonzero_end(bytes: &[u8], from: usize) -> usize {
    const BLOCK_BYTES: usize = 4096;
    static ZEROS: [u8; BLOCK_BYTES] = [0; BLOCK_BYTES];
    let Some(tail) = bytes.get(from..) else {
        return from;
    };
    let mut end = tail.len();
    while end > 0 {
        let start = end.saturating_sub(BLOCK_BYTES);
        let block = &tail[start..end];
        if block != &ZEROS[..block.len()] {
            let last = block.iter().rposition(|&b| b != 0).unwrap_or(0);
            return record::align_up(from + start + last + 1).min(bytes.len());
        }
        end = start;
    }
    from
}

/// Counts the valid frames in `bytes[from..]` with LSN at least `min_lsn`, and the highest
/// durable LSN any of them claims.
fn frames_after(
    salt: u32,
    bytes: &[u8],
    from: usize,
    min_lsn: Lsn,
    max_record_bytes: u32,
) -> (u64, Option<(usize, Lsn)>, Lsn) {
    let mut count = 0;
    let mut first = None;
    let mut max_durable = 0;
    let mut at = from;
    while let Some((offset, header)) =
        record::find_frame(salt, bytes, at, min_lsn..Lsn::MAX, max_record_bytes)
    {
        count += 1;
        first.get_or_insert((offset, header.lsn));
        max_durable = max_durable.max(header.durable_lsn);
        at = offset + record::frame_bytes(header.payload_len as usize);
    }
    (count, first, max_durable)
}

/// Reads the log in `storage`.
pub(crate) fn scan(storage: &dyn Storage, opts: ScanOptions) -> Result<Scan, Error> {
    let mut scan = Scan {
        next_seq: 1,
        ..Scan::default()
    };
    let mut segment_files = Vec::new();
    let mut snapshot_files = Vec::new();
    for name in storage.list()? {
        if name.ends_with(".tmp") {
            scan.discard.push(name);
        } else if let Some(seq) = segment::parse_segment_name(&name) {
            segment_files.push((seq, name));
        } else if let Some(lsn) = snapshot::parse_snapshot_name(&name) {
            snapshot_files.push((lsn, name));
        }
    }
    segment_files.sort();
    snapshot_files.sort();
    scan.snapshot_files = snapshot_files.iter().map(|(lsn, _)| *lsn).collect();
    scan.next_seq = segment_files.last().map_or(1, |(seq, _)| seq + 1);

    // The newest valid snapshot.
    let mut chosen: Option<Snapshot> = None;
    for (lsn, name) in snapshot_files.iter().rev() {
        if chosen.is_some() && !opts.verify_all {
            break;
        }
        let bytes = storage.read(name, MAX_SNAPSHOT_BYTES)?;
        match snapshot::decode(*lsn, &bytes) {
            Ok(snap) => {
                if chosen.is_none() {
                    chosen = Some(snap);
                }
            }
            Err(reason) if opts.verify_all => {
                return Err(corruption(storage.path(name), 0, reason));
            }
            Err(reason) => {
                tracing::warn!(snapshot = %storage.path(name).display(), reason, "skipping damaged snapshot");
                scan.log.report.damaged_snapshots.push(storage.path(name));
            }
        }
    }
    let start_lsn = chosen.as_ref().map_or(1, |s| s.lsn);

    // Segment headers: in-use segments, then trailing prepared (or torn) ones.
    let mut headers = Vec::with_capacity(segment_files.len());
    for (seq, name) in &segment_files {
        let page = storage.read(name, HEADER_PAGE_BYTES as u64)?;
        headers.push((*seq, name.clone(), SegmentHeader::decode_page(&page)));
    }
    let last_assigned = headers
        .iter()
        .rposition(|(_, _, h)| h.as_ref().is_ok_and(|h| h.base_lsn != 0));
    let first_trailing = last_assigned.map_or(0, |i| i + 1);
    for (_, name, header) in headers.drain(first_trailing..) {
        let bytes = storage.read_segment(&name, MAX_SEGMENT_BYTES)?;
        match header {
            Ok(header) => {
                // Prepared but never activated: any records in it were never synced.
                let (records, _, _) = frames_after(
                    header.salt,
                    &bytes,
                    HEADER_PAGE_BYTES,
                    1,
                    opts.max_record_bytes,
                );
                let end = nonzero_end(&bytes, HEADER_PAGE_BYTES);
                let clean = end <= HEADER_PAGE_BYTES && bytes.len() as u64 == header.size_bytes;
                if clean && scan.reusable.is_none() {
                    scan.reusable = Some((name, header));
                    continue;
                }
                scan.log.report.torn_tail_bytes += (end - HEADER_PAGE_BYTES.min(end)) as u64;
                scan.log.report.torn_tail_records += records;
            }
            Err(reason) => {
                if nonzero_end(&bytes, HEADER_PAGE_BYTES.min(bytes.len())) > HEADER_PAGE_BYTES {
                    // Data behind a header that cannot be read: it cannot be checked, so
                    // it cannot be called a torn tail.
                    if opts.mode == RecoveryMode::Strict {
                        return Err(corruption(storage.path(&name), 0, reason));
                    }
                    scan.log
                        .report
                        .dropped
                        .push((storage.path(&name), 0, bytes.len() as u64));
                } else {
                    // A file cut short or zeroed inside its header: nothing to lose.
                    scan.log.report.torn_tail_bytes += nonzero_end(&bytes, 0) as u64;
                }
            }
        }
        scan.discard.push(name);
    }

    // Segments in use must all have good headers and increasing base LSNs.
    let mut segments: Vec<SegmentMeta> = Vec::with_capacity(headers.len());
    for (_, name, header) in headers {
        let problem = match header {
            Ok(h) if h.base_lsn == 0 => Some("unused segment in the middle of the log"),
            Ok(h)
                if segments
                    .last()
                    .is_some_and(|p| p.header.base_lsn >= h.base_lsn) =>
            {
                Some("segment base LSN does not follow the previous segment")
            }
            Ok(header) => {
                segments.push(SegmentMeta {
                    name: name.clone(),
                    header,
                });
                None
            }
            Err(reason) => Some(reason),
        };
        if let Some(reason) = problem {
            if opts.mode == RecoveryMode::Strict {
                return Err(corruption(storage.path(&name), 0, reason));
            }
            let len = storage.read_segment(&name, MAX_SEGMENT_BYTES)?.len() as u64;
            scan.log.report.dropped.push((storage.path(&name), 0, len));
        }
    }

    // The first segment needed: the last one starting at or before `start_lsn`.
    let first_needed = match segments
        .iter()
        .rposition(|s| s.header.base_lsn <= start_lsn)
    {
        Some(i) => i,
        None => {
            if let Some(first) = segments.first() {
                let reason = format!(
                    "records {start_lsn}..{} are missing (no segment or snapshot holds them)",
                    first.header.base_lsn
                );
                if opts.mode == RecoveryMode::Strict {
                    return Err(corruption(storage.path(&first.name), 0, reason));
                }
                scan.log
                    .report
                    .dropped
                    .push((storage.path(&first.name), 0, 0));
            }
            0
        }
    };
    let first_scanned = if opts.verify_all { 0 } else { first_needed };

    let mut next_lsn = start_lsn;
    for i in first_scanned..segments.len() {
        let seg = &segments[i];
        let next_base = segments.get(i + 1).map(|s| s.header.base_lsn);
        let path = storage.path(&seg.name);
        let bytes = storage.read_segment(&seg.name, seg.header.size_bytes)?;
        scan.log.report.segments += 1;
        let salt = seg.header.salt;
        let max = opts.max_record_bytes;
        let mut offset = HEADER_PAGE_BYTES;
        let mut expected = seg.header.base_lsn;
        let dirty_end = if next_base.is_none() {
            nonzero_end(&bytes, HEADER_PAGE_BYTES.min(bytes.len()))
        } else {
            0
        };
        loop {
            if next_base == Some(expected) {
                break;
            }
            let failure = match record::read_frame(salt, &bytes, offset, Some(expected), max) {
                Ok((header, payload)) => {
                    scan.records_checked += 1;
                    if header.lsn >= start_lsn {
                        scan.log.records.push(Record {
                            lsn: header.lsn,
                            kind: header.kind,
                            payload: payload.to_vec(),
                        });
                    }
                    offset += record::frame_bytes(payload.len());
                    expected += 1;
                    continue;
                }
                Err(failure) => failure,
            };
            match next_base {
                Some(next_base) => {
                    // A segment before the last: it was synced in full, so this is damage.
                    if opts.mode == RecoveryMode::Strict {
                        return Err(corruption(path, offset as u64, failure.reason()));
                    }
                    match record::find_frame(salt, &bytes, offset + 1, expected..next_base, max) {
                        Some((found, header)) => {
                            scan.log.report.dropped.push((
                                path.clone(),
                                offset as u64,
                                (found - offset) as u64,
                            ));
                            offset = found;
                            expected = header.lsn;
                        }
                        None => {
                            let len = bytes.len().saturating_sub(offset) as u64;
                            scan.log
                                .report
                                .dropped
                                .push((path.clone(), offset as u64, len));
                            break;
                        }
                    }
                }
                None => {
                    if offset >= dirty_end {
                        break; // the clean end of the log
                    }
                    let (later, first, max_durable) =
                        frames_after(salt, &bytes, offset + 1, expected, max);
                    let acknowledged_lost = later > 0 && max_durable >= expected;
                    if !acknowledged_lost {
                        scan.log.report.torn_tail_bytes += (dirty_end - offset) as u64;
                        scan.log.report.torn_tail_records += 1 + later;
                        tracing::warn!(
                            segment = %path.display(),
                            offset,
                            bytes = dirty_end - offset,
                            "cutting a torn tail off the log"
                        );
                        break;
                    }
                    let reason = match failure {
                        FrameError::NoRoom | FrameError::Truncated => failure.reason(),
                        _ => "damaged record that a later record says was durable",
                    };
                    if opts.mode == RecoveryMode::Strict {
                        return Err(corruption(path, offset as u64, reason));
                    }
                    if let Some((found, lsn)) = first {
                        scan.log.report.dropped.push((
                            path.clone(),
                            offset as u64,
                            (found - offset) as u64,
                        ));
                        offset = found;
                        expected = lsn;
                    }
                }
            }
        }
        next_lsn = expected;
        if next_base.is_none() {
            scan.tail_offset = offset;
            scan.tail_dirty_end = dirty_end.max(offset);
        }
    }

    if let Some(snap) = &chosen {
        if snap.lsn > next_lsn && !segments.is_empty() {
            return Err(corruption(
                storage.path(&snapshot::snapshot_name(snap.lsn)),
                0,
                format!(
                    "snapshot at LSN {} is beyond the end of the log ({next_lsn})",
                    snap.lsn
                ),
            ));
        }
    }
    scan.log.report.records = scan.log.records.len() as u64;
    scan.log.snapshot = chosen;
    scan.next_lsn = next_lsn;
    scan.segments = segments;
    Ok(scan)
}
