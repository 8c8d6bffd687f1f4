//! Arbitrary bytes as segment and snapshot contents: recovery gives an error or a valid
//! prefix of what was written, never a panic and never an invented record.

use std::sync::Arc;

use proptest::prelude::*;
use wal::storage::{SimDisk, Storage};
use wal::{inspect, Error, Options, Record, Wal};

const SEGMENT: &str = "seg-0000000001.wal";

fn options() -> Options {
    Options {
        segment_size_bytes: 8 << 10,
        max_record_bytes: 512,
        ..Options::default()
    }
}

/// A log with one segment of 40 small records, committed.
fn written() -> (SimDisk, Vec<Record>) {
    let disk = SimDisk::new();
    let (mut wal, _) = Wal::open_on(Arc::new(disk.clone()), options()).expect("open");
    let mut records = Vec::new();
    for i in 0..40u8 {
        let payload = vec![i; usize::from(i) * 2];
        let lsn = wal.append(i, &payload).expect("append");
        records.push(Record {
            lsn,
            kind: i,
            payload,
        });
    }
    wal.commit().expect("commit");
    (disk, records)
}

/// Reading and opening `disk` either fails cleanly or returns a prefix of `original`.
fn check(disk: &SimDisk, original: &[Record]) {
    let outcomes = [
        inspect::read_log_on(disk).map(|(_, records)| records),
        inspect::verify_log_on(disk).map(|_| Vec::new()),
        Wal::open_on(Arc::new(disk.crash(0)), options()).map(|(_, r)| r.records),
    ];
    for outcome in outcomes {
        match outcome {
            Ok(records) => {
                assert!(records.len() <= original.len(), "invented records");
                assert_eq!(records[..], original[..records.len()], "not a prefix");
            }
            Err(Error::Corruption { .. } | Error::Io(_)) => {}
            Err(e) => panic!("unexpected error kind: {e}"),
        }
    }
}

/// Seeded like every randomised test here: `SEED=<n>` replays a run.
fn config() -> ProptestConfig {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0x5EED);
    println!("arbitrary: proptest seed {seed} (replay with SEED=<n>)");
    ProptestConfig {
        cases: 256,
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
        // A failure becomes a named regression test, not a stray file.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_segment_contents(bytes in proptest::collection::vec(any::<u8>(), 0..12_000)) {
        let (disk, _) = written();
        disk.set_file(SEGMENT, &bytes);
        check(&disk, &[]);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header(
        tail in proptest::collection::vec(any::<u8>(), 0..8_000),
    ) {
        let (disk, _) = written();
        let mut bytes = disk.file(SEGMENT).expect("segment");
        bytes.truncate(4096);
        bytes.extend_from_slice(&tail);
        disk.set_file(SEGMENT, &bytes);
        check(&disk, &[]);
    }

    #[test]
    fn arbitrary_bytes_over_part_of_a_valid_log(
        at in 0usize..8192,
        junk in proptest::collection::vec(any::<u8>(), 1..600),
    ) {
        let (disk, records) = written();
        let mut bytes = disk.file(SEGMENT).expect("segment");
        let end = (at + junk.len()).min(bytes.len());
        bytes[at..end].copy_from_slice(&junk[..end - at]);
        disk.set_file(SEGMENT, &bytes);
        check(&disk, &records);
    }

    #[test]
    fn arbitrary_snapshot_contents(
        bytes in proptest::collection::vec(any::<u8>(), 0..2_000),
        lsn in 0u64..100,
    ) {
        let (disk, records) = written();
        disk.set_file(&format!("snap-{lsn:020}.snap"), &bytes);
        // A damaged snapshot is skipped by recovery and named by verification.
        let (snapshot, read) = inspect::read_log_on(&disk).expect("read");
        prop_assert!(snapshot.is_none());
        prop_assert_eq!(read, records);
        let verify_failed = matches!(inspect::verify_log_on(&disk), Err(Error::Corruption { .. }));
        prop_assert!(verify_failed);
        prop_assert!(disk.list().expect("list").len() >= 2);
    }
}
