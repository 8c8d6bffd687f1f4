//! Sync policies: when `commit()` syncs, and what `sync_due_in()` tells an idle owner.

use std::sync::Arc;
use std::time::Duration;

use wal::storage::SimDisk;
use wal::{ManualClock, Options, SyncPolicy, Wal};

/// One step of a script and what must hold after it.
enum Step {
    Append,
    Commit,
    Sync,
    Advance(u64),
}

/// Runs `steps` under `policy`; after each, checks the total syncs and `sync_due_in`.
fn check(policy: SyncPolicy, steps: &[(Step, u64, Option<u64>)]) {
    let options = Options {
        sync: policy,
        ..Options::default()
    };
    let (mut wal, _) = Wal::open_on(Arc::new(SimDisk::new()), options).expect("open");
    let clock = Arc::new(ManualClock::new());
    wal.set_clock(clock.clone());
    // Opening an empty log writes the first segment's header; start from a clean slate.
    wal.sync().expect("sync");
    let base = wal.stats().syncs;
    for (i, (step, syncs, due_ms)) in steps.iter().enumerate() {
        match step {
            Step::Append => {
                wal.append(1, b"record").expect("append");
            }
            Step::Commit => wal.commit().expect("commit"),
            Step::Sync => wal.sync().expect("sync"),
            Step::Advance(ms) => clock.advance(Duration::from_millis(*ms)),
        }
        assert_eq!(
            wal.stats().syncs - base,
            *syncs,
            "{policy:?} step {i}: syncs"
        );
        assert_eq!(
            wal.sync_due_in(),
            due_ms.map(Duration::from_millis),
            "{policy:?} step {i}: sync_due_in"
        );
    }
}

#[test]
fn interval_syncs_when_the_oldest_unsynced_record_is_due() {
    use Step::*;
    check(
        SyncPolicy::Interval(Duration::from_millis(10)),
        &[
            (Commit, 0, None), // nothing pending
            (Append, 0, Some(10)),
            (Advance(4), 0, Some(6)),
            (Append, 0, Some(6)), // the deadline runs from the oldest record
            (Commit, 0, Some(6)), // not due yet
            (Advance(6), 0, Some(0)),
            (Commit, 1, None), // due: one sync for both records
            (Advance(100), 1, None),
            (Append, 1, Some(10)),
            (Advance(25), 1, Some(0)),
            (Commit, 2, None),
            (Append, 2, Some(10)),
            (Sync, 3, None), // an explicit sync always syncs
        ],
    );
}

#[test]
fn always_syncs_on_every_commit_with_pending_records() {
    use Step::*;
    check(
        SyncPolicy::Always,
        &[
            (Append, 0, None),
            (Append, 0, None),
            (Commit, 1, None),
            (Commit, 1, None), // nothing new
            (Append, 1, None),
            (Advance(1000), 1, None),
            (Commit, 2, None),
        ],
    );
}

#[test]
fn never_syncs_only_when_asked() {
    use Step::*;
    check(
        SyncPolicy::Never,
        &[
            (Append, 0, None),
            (Commit, 0, None),
            (Advance(1000), 0, None),
            (Commit, 0, None),
            (Sync, 1, None),
            (Sync, 1, None),
        ],
    );
}
