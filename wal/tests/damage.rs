//! Exhaustive damage to a real multi-segment log written through mmap: truncating or
//! zero-filling the last segment at every byte offset gives back the longest valid prefix;
//! flipping any bit of an older segment's records is `Corruption` naming the segment and
//! the record's offset; a flipped bit in the last segment is either that corruption or a
//! reported torn tail, and records a later record proves durable are never dropped
//! silently. Never a panic, never an invented record.

use std::path::{Path, PathBuf};

use wal::storage::SimDisk;
use wal::{inspect, Error, Options, Record, Wal};

/// Layout constants of the on-disk format (see `wal/src/segment.rs` and `record.rs`),
/// used to say where each record lives.
const HEADER_PAGE_BYTES: usize = 4096;
const RECORD_HEADER_BYTES: usize = 32;
const SEGMENT_BYTES: usize = 8192;
/// Records per commit: several batches land in the last segment.
const BATCH: usize = 4;

fn options() -> Options {
    Options {
        segment_size_bytes: SEGMENT_BYTES as u64,
        max_record_bytes: 512,
        ..Options::default()
    }
}

/// A record and where it was written.
#[derive(Clone, Debug)]
struct Placed {
    record: Record,
    segment: usize,
    offset: usize,
    /// Bytes covered by its checksums (header and payload, not the padding).
    checked_len: usize,
}

fn frame(len: usize) -> usize {
    (RECORD_HEADER_BYTES + len).div_ceil(8) * 8
}

/// Writes a log of three full-ish segments and returns where every record is.
fn build(dir: &Path) -> Vec<Placed> {
    let (mut wal, _) = Wal::open(dir, options()).expect("open");
    let mut placed: Vec<Placed> = Vec::new();
    let (mut segment, mut fill) = (1, HEADER_PAGE_BYTES);
    let mut i = 0usize;
    while !(segment == 3 && fill > SEGMENT_BYTES - 600) {
        let len = (i * 53) % 200;
        if fill + frame(len) > SEGMENT_BYTES {
            segment += 1;
            fill = HEADER_PAGE_BYTES;
        }
        let payload: Vec<u8> = (0..len).map(|j| (i * 7 + j) as u8).collect();
        let lsn = wal.append((i % 5) as u8, &payload).expect("append");
        placed.push(Placed {
            record: Record {
                lsn,
                kind: (i % 5) as u8,
                payload,
            },
            segment,
            offset: fill,
            checked_len: RECORD_HEADER_BYTES + len,
        });
        fill += frame(len);
        i += 1;
        if i.is_multiple_of(BATCH) {
            wal.commit().expect("commit");
        }
    }
    wal.commit().expect("commit");
    placed
}

fn segment_path(dir: &Path, segment: usize) -> PathBuf {
    dir.join(format!("seg-{segment:010}.wal"))
}

/// A simulated disk holding copies of every file in `dir`, so thousands of damaged
/// variants can be read without rewriting real files.
fn load(dir: &Path) -> SimDisk {
    let disk = SimDisk::new();
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        disk.set_file(&name, &std::fs::read(entry.path()).expect("read"));
    }
    disk
}

fn records_before(placed: &[Placed], keep: impl Fn(&Placed) -> bool) -> Vec<Record> {
    placed
        .iter()
        .take_while(|p| keep(p))
        .map(|p| p.record.clone())
        .collect()
}

/// Damages the last segment with `damage(bytes, k)` for every offset `k`, and checks that
/// reading the log returns exactly the records that end at or before `k`.
fn check_cut_at_every_offset(damage: fn(&mut Vec<u8>, usize)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let placed = build(dir.path());
    let pristine = std::fs::read(segment_path(dir.path(), 3)).expect("read");
    assert_eq!(pristine.len(), SEGMENT_BYTES);
    let disk = load(dir.path());
    for k in 0..=pristine.len() {
        let mut bytes = pristine.clone();
        damage(&mut bytes, k);
        disk.set_file("seg-0000000003.wal", &bytes);
        let expected = records_before(&placed, |p| p.segment < 3 || p.offset + p.checked_len <= k);
        let (_, records) = inspect::read_log_on(&disk)
            .unwrap_or_else(|e| panic!("offset {k}: read_log failed: {e}"));
        assert_eq!(records.len(), expected.len(), "offset {k}");
        assert_eq!(records, expected, "offset {k}");
    }
    // The full open path at a sample of offsets: recover, append, and recover again.
    for k in (0..=pristine.len()).step_by(509) {
        let copy = tempfile::tempdir().expect("tempdir");
        for entry in std::fs::read_dir(dir.path()).expect("read_dir").flatten() {
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).expect("copy");
        }
        let mut bytes = pristine.clone();
        damage(&mut bytes, k);
        std::fs::write(segment_path(copy.path(), 3), &bytes).expect("write");
        let mut expected =
            records_before(&placed, |p| p.segment < 3 || p.offset + p.checked_len <= k);
        let (mut wal, recovered) = Wal::open(copy.path(), options()).expect("open");
        assert_eq!(recovered.records, expected, "open at offset {k}");
        let lsn = wal.append(9, b"after recovery").expect("append");
        assert_eq!(lsn, expected.len() as u64 + 1);
        wal.commit().expect("commit");
        drop(wal);
        expected.push(Record {
            lsn,
            kind: 9,
            payload: b"after recovery".to_vec(),
        });
        let (_, recovered) = Wal::open(copy.path(), options()).expect("reopen");
        assert_eq!(recovered.records, expected, "reopen at offset {k}");
        assert_eq!(recovered.report.torn_tail_bytes, 0, "the tail was cleared");
        inspect::verify_log(copy.path()).expect("verify");
    }
}

#[test]
fn truncating_the_last_segment_anywhere_keeps_the_longest_valid_prefix() {
    check_cut_at_every_offset(|bytes, k| bytes.truncate(k));
}

#[test]
fn zero_filling_the_last_segment_anywhere_keeps_the_longest_valid_prefix() {
    check_cut_at_every_offset(|bytes, k| bytes[k..].fill(0));
}

/// Flips every bit of segment `segment` in turn and checks each outcome with `expect`.
fn flip_every_bit(segment: usize, expect: impl Fn(&[Placed], usize, Result<Vec<Record>, Error>)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let placed = build(dir.path());
    let name = format!("seg-{segment:010}.wal");
    let pristine = std::fs::read(dir.path().join(&name)).expect("read");
    let disk = load(dir.path());
    let used_end = placed
        .iter()
        .filter(|p| p.segment == segment)
        .map(|p| p.offset + frame(p.record.payload.len()))
        .max()
        .expect("records in segment");
    for byte in 0..used_end + 64 {
        for bit in 0..8 {
            let mut bytes = pristine.clone();
            bytes[byte] ^= 1 << bit;
            disk.set_file(&name, &bytes);
            let result = inspect::read_log_on(&disk).map(|(_, records)| records);
            expect(&placed, byte, result);
        }
    }
}

/// The record whose checksummed bytes contain `byte` of `segment`.
fn damaged(placed: &[Placed], segment: usize, byte: usize) -> Option<&Placed> {
    placed
        .iter()
        .find(|p| p.segment == segment && (p.offset..p.offset + p.checked_len).contains(&byte))
}

#[test]
fn any_bit_flip_in_an_older_segment_is_corruption_at_that_record() {
    flip_every_bit(1, |placed, byte, result| {
        let all: Vec<Record> = placed.iter().map(|p| p.record.clone()).collect();
        match (damaged(placed, 1, byte), result) {
            (
                Some(p),
                Err(Error::Corruption {
                    segment, offset, ..
                }),
            ) => {
                assert!(
                    segment.ends_with("seg-0000000001.wal"),
                    "byte {byte}: {segment:?}"
                );
                assert_eq!(offset as usize, p.offset, "byte {byte}");
            }
            // Padding, the spare header copy, and unused space are not data.
            (None, Ok(records)) => assert_eq!(records, all, "byte {byte}"),
            (p, result) => panic!("byte {byte} in {p:?}: {result:?}"),
        }
    });
}

#[test]
fn any_bit_flip_in_the_last_segment_is_corruption_or_a_reported_torn_tail() {
    let mut corruptions = 0;
    let counted = std::cell::Cell::new(0);
    flip_every_bit(3, |placed, byte, result| {
        let all: Vec<Record> = placed.iter().map(|p| p.record.clone()).collect();
        let last_batch_start = (all.len() - 1) / BATCH * BATCH; // index of its first record
        match (damaged(placed, 3, byte), result) {
            (
                Some(p),
                Err(Error::Corruption {
                    segment, offset, ..
                }),
            ) => {
                assert!(segment.ends_with("seg-0000000003.wal"), "byte {byte}");
                assert_eq!(offset as usize, p.offset, "byte {byte}");
                counted.set(counted.get() + 1);
            }
            (Some(p), Ok(records)) => {
                // Only the last batch, which no later record proves durable, may be cut.
                let index = (p.record.lsn - 1) as usize;
                assert!(
                    index >= last_batch_start,
                    "byte {byte}: acknowledged record dropped"
                );
                assert_eq!(records[..], all[..index], "byte {byte}");
            }
            (None, Ok(records)) => assert_eq!(records, all, "byte {byte}"),
            (p, result) => panic!("byte {byte} in {p:?}: {result:?}"),
        }
    });
    corruptions += counted.get();
    assert!(
        corruptions > 1000,
        "flips in earlier batches are corruption"
    );
}

#[test]
fn lossy_recovery_drops_exactly_the_damaged_record_and_strict_opens_after_a_snapshot() {
    use std::sync::Arc;
    use wal::RecoveryMode;

    let dir = tempfile::tempdir().expect("tempdir");
    let placed = build(dir.path());
    let all: Vec<Record> = placed.iter().map(|p| p.record.clone()).collect();
    // Damage a record in the middle of each of the first two segments.
    let victims: Vec<&Placed> = [1, 2]
        .iter()
        .map(|&segment| {
            let in_segment: Vec<&Placed> = placed.iter().filter(|p| p.segment == segment).collect();
            in_segment[in_segment.len() / 2]
        })
        .collect();
    let disk = load(dir.path());
    for victim in &victims {
        let name = format!("seg-{:010}.wal", victim.segment);
        let mut bytes = disk.file(&name).expect("segment");
        bytes[victim.offset + RECORD_HEADER_BYTES - 1] ^= 0x80;
        disk.set_file(&name, &bytes);
    }
    let lossy = Options {
        recovery: RecoveryMode::Lossy,
        ..options()
    };
    assert!(matches!(
        Wal::open_on(Arc::new(disk.clone()), options()),
        Err(Error::Corruption { .. })
    ));
    let (mut wal, recovered) = Wal::open_on(Arc::new(disk.clone()), lossy).expect("lossy open");
    let dropped_lsns: Vec<u64> = victims.iter().map(|v| v.record.lsn).collect();
    let expected: Vec<Record> = all
        .iter()
        .filter(|r| !dropped_lsns.contains(&r.lsn))
        .cloned()
        .collect();
    assert_eq!(recovered.records, expected);
    let expected_dropped: Vec<(PathBuf, u64, u64)> = victims
        .iter()
        .map(|v| {
            (
                PathBuf::from("sim").join(format!("seg-{:010}.wal", v.segment)),
                v.offset as u64,
                frame(v.record.payload.len()) as u64,
            )
        })
        .collect();
    assert_eq!(recovered.report.dropped, expected_dropped);
    // Appends continue after the last good record; a snapshot makes strict opens work.
    let lsn = wal.append(1, b"after repair").expect("append");
    assert_eq!(lsn, all.len() as u64 + 1);
    wal.write_snapshot(wal.next_lsn(), b"repaired state")
        .expect("snapshot");
    drop(wal);
    let (_, recovered) = Wal::open_on(Arc::new(disk), options()).expect("strict open");
    assert_eq!(
        recovered.snapshot.map(|s| s.data),
        Some(b"repaired state".to_vec())
    );
    assert!(recovered.records.is_empty());
}
