//! `GroupCommit`: producer threads sharing one log get their own record back only once a
//! sync covers it. After a simulated power loss every acknowledged record is there; a failed
//! sync fails every producer it covered and nothing after it is ever reported durable.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use wal::storage::{FaultPlan, SimDisk};
use wal::{Error, GroupCommit, Options, SyncPolicy, Wal};

/// Producer threads per test: more than the machine's cores, so producers queue up
/// behind a running sync.
const PRODUCERS: u64 = 8;
/// Records each producer appends.
const RECORDS_PER_PRODUCER: u64 = 40;
/// Crash seeds per test (each a full multi-threaded run).
const SEEDS: u64 = 20;

fn options() -> Options {
    Options {
        // Small, so the runs rotate segments while producers wait.
        segment_size_bytes: 8 << 10,
        max_record_bytes: 256,
        sync: SyncPolicy::Always,
        ..Options::default()
    }
}

/// The payload of producer `p`'s `i`th record: tells which record an LSN got.
fn payload(p: u64, i: u64) -> Vec<u8> {
    common::payload(p << 32 | i, 10 + (i % 50) as usize)
}

/// Runs `PRODUCERS` threads appending through `log` until each has appended
/// `RECORDS_PER_PRODUCER` records or got an error. Returns each acknowledged LSN with its
/// payload, and the errors.
fn produce(log: &Arc<GroupCommit>) -> (BTreeMap<u64, Vec<u8>>, Vec<Error>) {
    let handles: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let log = Arc::clone(log);
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..RECORDS_PER_PRODUCER {
                    let payload = payload(p, i);
                    match log.append_durable(1, &payload) {
                        Ok(lsn) => acked.push((lsn, payload)),
                        Err(e) => return (acked, Some(e)),
                    }
                }
                (acked, None)
            })
        })
        .collect();
    let mut acked = BTreeMap::new();
    let mut errors = Vec::new();
    for handle in handles {
        let (mine, error) = handle.join().expect("producer");
        for (lsn, payload) in mine {
            assert!(
                acked.insert(lsn, payload).is_none(),
                "LSN {lsn} given twice"
            );
        }
        errors.extend(error);
    }
    (acked, errors)
}

/// Loses power on `disk` and checks that every acknowledged record comes back.
fn check_survives_crash(disk: &SimDisk, seed: u64, acked: &BTreeMap<u64, Vec<u8>>) {
    let (_, recovered) = Wal::open_on(Arc::new(disk.crash(seed)), options()).expect("recover");
    let recovered: BTreeMap<u64, Vec<u8>> = recovered
        .records
        .into_iter()
        .map(|r| (r.lsn, r.payload))
        .collect();
    for (lsn, payload) in acked {
        assert_eq!(
            recovered.get(lsn),
            Some(payload),
            "acknowledged LSN {lsn} lost or changed"
        );
    }
}

#[test]
fn every_acknowledged_record_survives_a_power_loss() {
    common::for_each_seed("group commit crash", SEEDS, |seed| {
        let disk = SimDisk::new();
        let (wal, _) = Wal::open_on(Arc::new(disk.clone()), options()).expect("open");
        let log = Arc::new(GroupCommit::new(wal).expect("start"));
        let (acked, errors) = produce(&log);
        assert!(errors.is_empty(), "no fault planned: {errors:?}");
        assert_eq!(acked.len() as u64, PRODUCERS * RECORDS_PER_PRODUCER);
        let last = *acked.keys().last().expect("records");
        assert_eq!(last, acked.len() as u64, "LSNs 1..=n, none skipped");
        assert!(log.durable_lsn() >= last);
        let stats = log.stats().expect("stats");
        assert!(stats.syncs <= stats.records_appended);
        check_survives_crash(&disk, seed, &acked);
    });
}

#[test]
fn a_failed_sync_fails_every_producer_it_covered() {
    // Runs where the failed sync covered appended records (rather than, say, the sync of a
    // new segment's file, which fails that append alone).
    let mut covering_failures = 0;
    // The sync that fails is the 1st, 2nd, ... one after the start.
    for failing_sync in 0..SEEDS {
        let disk = SimDisk::new();
        let (wal, _) = Wal::open_on(Arc::new(disk.clone()), options()).expect("open");
        disk.set_faults(FaultPlan {
            eio_after_syncs: Some(failing_sync),
            ..FaultPlan::default()
        });
        let log = Arc::new(GroupCommit::new(wal).expect("start"));
        let (acked, errors) = produce(&log);
        // Every producer ends on the failure: nothing becomes durable after it. (A
        // producer whose append rotated the segment ran that sync itself: the I/O error.)
        assert_eq!(errors.len() as u64, PRODUCERS, "sync {failing_sync}");
        for e in &errors {
            let named = match e {
                Error::Poisoned(reason) => reason.contains("sync"),
                Error::Io(io) => io.raw_os_error() == Some(libc::EIO),
                _ => false,
            };
            assert!(named, "sync {failing_sync}: {e}");
        }
        // Exactly the records up to the last good sync were acknowledged, and the
        // records the failed sync covered were appended but never acknowledged.
        let durable = log.durable_lsn();
        let expected: Vec<u64> = (1..=durable).collect();
        assert_eq!(acked.keys().copied().collect::<Vec<_>>(), expected);
        let log = Arc::try_unwrap(log).expect("producers are done");
        let wal = log.into_inner().expect("log back");
        if wal.next_lsn() - 1 > durable {
            covering_failures += 1;
        }
        assert_eq!(wal.durable_lsn(), durable);
        disk.set_faults(FaultPlan::default());
        check_survives_crash(&disk, failing_sync, &acked);
    }
    println!("{covering_failures} of {SEEDS} failed syncs covered appended records");
    assert!(covering_failures > SEEDS / 2, "{covering_failures} runs");
}

#[test]
fn records_come_back_in_order_on_real_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        segment_size_bytes: 16 << 10,
        ..options()
    };
    let (wal, _) = Wal::open(dir.path(), options.clone()).expect("open");
    let log = Arc::new(GroupCommit::new(wal).expect("start"));
    let (acked, errors) = produce(&log);
    assert!(errors.is_empty(), "{errors:?}");
    drop(log);
    let (_, recovered) = Wal::open(dir.path(), options).expect("reopen");
    let recovered: BTreeMap<u64, Vec<u8>> = recovered
        .records
        .into_iter()
        .map(|r| (r.lsn, r.payload))
        .collect();
    assert_eq!(recovered, acked);
}
