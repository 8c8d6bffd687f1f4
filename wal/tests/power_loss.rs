//! Simulated power loss: a disk that keeps synced and unsynced pages apart loses power at
//! random moments. Over thousands of seeds, recovery never fails or panics, the recovered
//! records are an exact prefix of what was appended (nothing invented, nothing reordered),
//! and every record acknowledged as durable is present.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wal::storage::SimDisk;
use wal::{ManualClock, Options, Record, SyncPolicy, Wal};

/// Seeds run by default; each is a few crash/recover rounds of a few hundred operations.
const SEEDS: u64 = 2_000;
/// Crash/recover rounds per seed.
const ROUNDS: usize = 3;

/// What the seeds exercised, so the test fails if crashes stop producing torn tails.
#[derive(Default)]
struct Coverage {
    torn_tails: u64,
    lost_unacknowledged: u64,
    snapshots_recovered: u64,
}

fn run(seed: u64, coverage: &mut Coverage) {
    let mut rng = StdRng::seed_from_u64(seed);
    let sync = match rng.random_range(0..4u8) {
        0 | 1 => SyncPolicy::Always,
        2 => SyncPolicy::Interval(Duration::from_millis(5)),
        _ => SyncPolicy::Never,
    };
    let options = Options {
        segment_size_bytes: rng.random_range(8u64..24) << 10,
        max_record_bytes: 600,
        sync,
        ..Options::default()
    };
    let mut disk = SimDisk::new();
    // Everything appended that may still be on disk, by LSN, and the durable watermark.
    let mut appended: Vec<Record> = Vec::new();
    let mut durable: u64 = 0;
    let mut snapshots: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut newest_snapshot: Option<u64> = None;

    for round in 0..=ROUNDS {
        let (mut wal, recovered) = Wal::open_on(Arc::new(disk.clone()), options.clone())
            .unwrap_or_else(|e| panic!("round {round}: recovery failed: {e}"));
        // The newest snapshot written comes back, intact.
        let snap_lsn = recovered.snapshot.as_ref().map(|s| s.lsn);
        assert_eq!(snap_lsn, newest_snapshot, "round {round}: snapshot");
        if let Some(snap) = &recovered.snapshot {
            assert_eq!(Some(&snap.data), snapshots.get(&snap.lsn));
        }
        // Records: an exact run of what was appended, from the snapshot on, that reaches
        // every acknowledged record.
        let start = snap_lsn.unwrap_or(1);
        let from = (start - 1) as usize;
        let got = &recovered.records;
        assert!(
            from + got.len() <= appended.len(),
            "round {round}: invented records"
        );
        assert_eq!(
            got[..],
            appended[from..from + got.len()],
            "round {round}: not a prefix"
        );
        let end = start + got.len() as u64; // next LSN
        assert!(
            end > durable,
            "round {round}: lost durable record {durable} (log ends at {end})"
        );
        assert_eq!(wal.next_lsn(), end, "round {round}: next LSN");
        coverage.torn_tails += u64::from(recovered.report.torn_tail_bytes > 0);
        coverage.lost_unacknowledged += (appended.len() - (from + got.len())) as u64;
        coverage.snapshots_recovered += u64::from(snap_lsn.is_some());
        appended.truncate(from + got.len());
        durable = end - 1;
        if round == ROUNDS {
            break;
        }

        let clock = Arc::new(ManualClock::new());
        wal.set_clock(clock.clone());
        let ops = rng.random_range(1..300);
        // Syncs taken with `begin_sync` and not yet run, oldest first (run in order, as
        // the engine's syncer thread does, or folded into one).
        let mut pending: std::collections::VecDeque<wal::PendingSync> = Default::default();
        for _ in 0..ops {
            let syncs_before = wal.stats().syncs;
            let op = rng.random_range(0..100u8);
            let mut durable_after_sync = None;
            if op < 75 {
                let lsn = wal.next_lsn();
                let len = if rng.random_bool(0.1) {
                    rng.random_range(0..=600)
                } else {
                    rng.random_range(0..120)
                };
                let record = Record {
                    lsn,
                    kind: rng.random(),
                    payload: common::payload(lsn, len),
                };
                let got = wal.append(record.kind, &record.payload).expect("append");
                assert_eq!(got, lsn);
                appended.push(record);
                durable_after_sync = Some(lsn - 1);
            } else if op < 80 {
                if let Some(p) = wal.begin_sync().expect("begin_sync") {
                    pending.push_back(p);
                }
            } else if op < 85 {
                let run = if rng.random_bool(0.5) {
                    pending.pop_front()
                } else {
                    let mut all = pending.drain(..);
                    all.next().map(|mut first| {
                        all.for_each(|later| first.absorb(later));
                        first
                    })
                };
                if let Some(p) = run {
                    let upto = p.upto();
                    assert_eq!(p.run().expect("pending sync"), upto);
                    durable = durable.max(upto);
                    assert_eq!(wal.durable_lsn(), durable.max(wal.durable_lsn()));
                }
                continue;
            } else if op < 95 {
                wal.commit().expect("commit");
                if sync == SyncPolicy::Always {
                    // The acknowledgement: everything appended so far is durable.
                    durable = wal.next_lsn() - 1;
                }
            } else if op < 97 {
                wal.sync().expect("sync");
                durable = wal.next_lsn() - 1;
            } else {
                let lsn = rng.random_range(1..=wal.next_lsn());
                if newest_snapshot.is_none_or(|newest| lsn >= newest) {
                    let data = common::payload(lsn ^ 0xABCD, rng.random_range(0..200));
                    wal.write_snapshot(lsn, &data).expect("snapshot");
                    snapshots.insert(lsn, data);
                    newest_snapshot = Some(lsn);
                    durable = wal.next_lsn() - 1;
                }
            }
            if wal.stats().syncs > syncs_before {
                durable = durable.max(durable_after_sync.unwrap_or(wal.next_lsn() - 1));
            }
            clock.advance(Duration::from_millis(rng.random_range(0..3)));
        }
        drop(wal);
        disk = disk.crash(rng.random());
    }
}

#[test]
fn power_loss_never_loses_acknowledged_records() {
    let mut coverage = Coverage::default();
    common::for_each_seed("power_loss", SEEDS, |seed| run(seed, &mut coverage));
    println!(
        "torn tails {}, unacknowledged records lost {}, snapshots recovered {}",
        coverage.torn_tails, coverage.lost_unacknowledged, coverage.snapshots_recovered
    );
    if std::env::var("SEED").is_err() {
        assert!(coverage.torn_tails > 100, "crashes should tear tails");
        assert!(
            coverage.lost_unacknowledged > 100,
            "crashes should lose unsynced records"
        );
        assert!(
            coverage.snapshots_recovered > 100,
            "snapshots should be exercised"
        );
    }
}
