//! Injected faults: a failed sync poisons the log; a full disk fails appends that need a
//! new segment (and snapshots) without poisoning, and nothing acknowledged is lost.

use std::sync::Arc;

use wal::storage::{FaultPlan, SimDisk};
use wal::{Error, Options, Record, Wal};

fn options() -> Options {
    Options {
        segment_size_bytes: 8 << 10,
        max_record_bytes: 256,
        ..Options::default()
    }
}

fn append(wal: &mut Wal, records: &mut Vec<Record>, len: usize) -> Result<u64, Error> {
    let payload = vec![records.len() as u8; len];
    let lsn = wal.append(2, &payload)?;
    records.push(Record {
        lsn,
        kind: 2,
        payload,
    });
    Ok(lsn)
}

fn is_errno(e: &Error, errno: i32) -> bool {
    matches!(e, Error::Io(io) if io.raw_os_error() == Some(errno))
}

#[test]
fn a_failed_sync_poisons_every_later_call() {
    let disk = SimDisk::new();
    let (mut wal, _) = Wal::open_on(Arc::new(disk.clone()), options()).expect("open");
    let mut records = Vec::new();
    for _ in 0..5 {
        append(&mut wal, &mut records, 10).expect("append");
    }
    wal.commit().expect("commit");
    let acknowledged = records.clone();

    disk.set_faults(FaultPlan {
        eio_after_syncs: Some(0),
        ..FaultPlan::default()
    });
    append(&mut wal, &mut records, 10).expect("append before the failing sync");
    let err = wal.commit().expect_err("sync fails");
    assert!(
        is_errno(&err, libc::EIO),
        "first failure is the I/O error: {err}"
    );
    // From now on, everything refuses, even after the fault is gone: a retried fsync
    // does not bring lost pages back.
    disk.set_faults(FaultPlan::default());
    assert!(matches!(wal.append(2, b"x"), Err(Error::Poisoned(_))));
    assert!(matches!(wal.commit(), Err(Error::Poisoned(_))));
    assert!(matches!(wal.sync(), Err(Error::Poisoned(_))));
    assert!(matches!(
        wal.write_snapshot(1, b"s"),
        Err(Error::Poisoned(_))
    ));
    drop(wal);

    // The process recovers from disk after a power loss: the acknowledged records are there.
    let (_, recovered) = Wal::open_on(Arc::new(disk.crash(7)), options()).expect("reopen");
    assert!(recovered.records.len() >= acknowledged.len());
    assert_eq!(recovered.records[..acknowledged.len()], acknowledged[..]);
}

#[test]
fn a_full_disk_fails_appends_needing_a_segment_without_poisoning() {
    let disk = SimDisk::new();
    let (mut wal, _) = Wal::open_on(Arc::new(disk.clone()), options()).expect("open");
    // The active segment and the one prepared ahead exist; no more can be allocated.
    disk.set_faults(FaultPlan {
        enospc_after_allocations: Some(0),
        ..FaultPlan::default()
    });
    let mut records = Vec::new();
    let err = loop {
        match append(&mut wal, &mut records, 200) {
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert!(
        is_errno(&err, libc::ENOSPC),
        "append fails with ENOSPC: {err}"
    );
    // 17 records of 200 bytes fit in a segment's 4 KiB: two segments went in first.
    assert_eq!(records.len(), 34, "two segments' worth went in first");
    // The log is not poisoned: what was appended commits, and the next LSN is unchanged.
    wal.commit().expect("commit after ENOSPC");
    let next = wal.next_lsn();
    assert!(is_errno(
        &wal.write_snapshot(next, b"s").expect_err("no room"),
        libc::ENOSPC
    ));
    assert_eq!(wal.next_lsn(), next);
    // Space comes back: appends continue with no gap.
    disk.set_faults(FaultPlan::default());
    assert_eq!(append(&mut wal, &mut records, 200).expect("append"), next);
    wal.commit().expect("commit");
    drop(wal);
    let (_, recovered) = Wal::open_on(Arc::new(disk.crash(3)), options()).expect("reopen");
    assert_eq!(recovered.records, records);
}

#[test]
fn a_full_disk_at_open_is_an_io_error() {
    let disk = SimDisk::new();
    disk.set_faults(FaultPlan {
        enospc_after_allocations: Some(0),
        ..FaultPlan::default()
    });
    let err = Wal::open_on(Arc::new(disk), options()).expect_err("no room");
    assert!(is_errno(&err, libc::ENOSPC), "{err}");
}

#[test]
fn a_failed_sync_at_rotation_poisons_even_under_never() {
    // Rotation syncs the full segment whatever the policy; its failure is a failed sync.
    let disk = SimDisk::new();
    let options = Options {
        sync: wal::SyncPolicy::Never,
        ..options()
    };
    let (mut wal, _) = Wal::open_on(Arc::new(disk.clone()), options).expect("open");
    disk.set_faults(FaultPlan {
        eio_after_syncs: Some(0),
        ..FaultPlan::default()
    });
    let mut records = Vec::new();
    let err = loop {
        if let Err(e) = append(&mut wal, &mut records, 200) {
            break e;
        }
        wal.commit().expect("commit under Never does not sync");
    };
    assert!(is_errno(&err, libc::EIO), "{err}");
    assert_eq!(records.len(), 17, "one segment's worth went in");
    assert!(matches!(wal.append(2, b"x"), Err(Error::Poisoned(_))));
}

#[test]
fn a_failed_sync_on_another_thread_poisons_the_owner() {
    let disk = SimDisk::new();
    let (mut wal, _) = Wal::open_on(Arc::new(disk.clone()), options()).expect("open");
    let mut records = Vec::new();
    append(&mut wal, &mut records, 10).expect("append");
    let first = wal.begin_sync().expect("begin").expect("something to sync");
    let durable = std::thread::spawn(move || first.run())
        .join()
        .expect("sync thread")
        .expect("first sync");
    assert_eq!(durable, 1);
    assert_eq!(wal.durable_lsn(), 1);

    append(&mut wal, &mut records, 10).expect("append");
    let second = wal.begin_sync().expect("begin").expect("something to sync");
    disk.set_faults(FaultPlan {
        eio_after_syncs: Some(0),
        ..FaultPlan::default()
    });
    let err = std::thread::spawn(move || second.run())
        .join()
        .expect("sync thread")
        .expect_err("sync fails");
    assert!(is_errno(&err, libc::EIO), "the I/O error: {err}");
    disk.set_faults(FaultPlan::default());
    assert_eq!(wal.durable_lsn(), 1, "the failed sync made nothing durable");
    assert!(matches!(wal.append(2, b"x"), Err(Error::Poisoned(_))));
    assert!(matches!(wal.begin_sync(), Err(Error::Poisoned(_))));
    assert!(matches!(wal.commit(), Err(Error::Poisoned(_))));
}
