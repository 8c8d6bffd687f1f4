//! Snapshots on real files: recovery returns the newest valid snapshot and the records
//! from its LSN on; two snapshots are kept; segments no kept snapshot needs are deleted.

use std::path::Path;

use wal::{inspect, Error, Options, Record, Snapshot, Wal};

fn options() -> Options {
    Options {
        segment_size_bytes: 8 << 10,
        max_record_bytes: 512,
        ..Options::default()
    }
}

fn append_n(wal: &mut Wal, records: &mut Vec<Record>, n: usize) {
    for _ in 0..n {
        let lsn = wal.next_lsn();
        let payload = format!("record {lsn}").into_bytes().repeat(4);
        assert_eq!(wal.append(1, &payload).expect("append"), lsn);
        records.push(Record {
            lsn,
            kind: 1,
            payload,
        });
    }
    wal.commit().expect("commit");
}

/// Appends `payloads` as records of `kind` (kept in `records`) and commits them.
fn append_payloads(
    wal: &mut Wal,
    records: &mut Vec<Record>,
    kind: u8,
    payloads: impl IntoIterator<Item = Vec<u8>>,
) {
    for payload in payloads {
        let lsn = wal.append(kind, &payload).expect("append");
        records.push(Record { lsn, kind, payload });
    }
    wal.commit().expect("commit");
}

fn files(dir: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// Reopens `dir` and checks the snapshot and records recovery returns.
fn check(dir: &Path, snapshot: Option<(u64, &[u8])>, records: &[Record]) -> Wal {
    let (wal, recovered) = Wal::open(dir, options()).expect("open");
    let expected = snapshot.map(|(lsn, data)| Snapshot {
        lsn,
        data: data.to_vec(),
    });
    assert_eq!(recovered.snapshot, expected);
    let start = snapshot.map_or(1, |(lsn, _)| lsn);
    let expected: Vec<Record> = records.iter().filter(|r| r.lsn >= start).cloned().collect();
    assert_eq!(recovered.records, expected);
    // The operator view agrees, and the whole directory verifies.
    let (snap, read) = inspect::read_log(dir).expect("read_log");
    assert_eq!(snap, recovered.snapshot);
    assert_eq!(read, recovered.records);
    inspect::verify_log(dir).expect("verify");
    wal
}

#[test]
fn recovery_returns_the_snapshot_and_the_records_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = Wal::open(dir.path(), options()).expect("open");
    let mut records = Vec::new();
    append_n(&mut wal, &mut records, 100);
    wal.write_snapshot(60, b"state at 60").expect("snapshot");
    append_n(&mut wal, &mut records, 20);
    drop(wal);
    let mut wal = check(dir.path(), Some((60, b"state at 60")), &records);
    // A snapshot at the very end covers everything.
    let end = wal.next_lsn();
    wal.write_snapshot(end, b"all").expect("snapshot");
    drop(wal);
    let mut wal = check(dir.path(), Some((end, b"all")), &records);
    append_n(&mut wal, &mut records, 3);
    drop(wal);
    check(dir.path(), Some((end, b"all")), &records);
}

#[test]
fn two_snapshots_are_kept_and_older_segments_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = Wal::open(dir.path(), options()).expect("open");
    let mut records = Vec::new();
    let mut taken = Vec::new();
    for round in 1..=5u64 {
        append_n(&mut wal, &mut records, 150);
        let lsn = wal.next_lsn() - 10;
        wal.write_snapshot(lsn, &round.to_le_bytes())
            .expect("snapshot");
        taken.push(lsn);
    }
    let segments_live = files(dir.path(), "seg-").len();
    drop(wal);
    let snaps = files(dir.path(), "snap-");
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert!(snaps[0].contains(&format!("{:020}", taken[3])));
    assert!(snaps[1].contains(&format!("{:020}", taken[4])));
    // About 150 records of ~50 bytes fill 2 segments of 8 KiB per round: 10 segments were
    // written; only those from the older kept snapshot on are left.
    assert!(segments_live <= 6, "{segments_live} segments left");
    check(dir.path(), Some((taken[4], &5u64.to_le_bytes())), &records);
}

/// `begin_snapshot` / `finish_snapshot`: the file is written on another thread while the
/// owner keeps appending; until `finish_snapshot` the older snapshots and segments stay,
/// and a crash in between recovers from the new snapshot all the same.
#[test]
fn a_snapshot_written_on_another_thread_while_appends_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = Wal::open(dir.path(), options()).expect("open");
    let mut records = Vec::new();
    let mut taken = Vec::new();
    for round in 1..=5u64 {
        append_n(&mut wal, &mut records, 150);
        let lsn = wal.next_lsn() - 10;
        let pending = wal.begin_snapshot(lsn).expect("begin");
        assert_eq!(pending.lsn(), lsn);
        let writer = std::thread::spawn(move || pending.run(&round.to_le_bytes()));
        append_n(&mut wal, &mut records, 50);
        assert_eq!(writer.join().expect("writer thread").expect("run"), lsn);
        taken.push(lsn);
        // Written, not yet finished: nothing older was deleted.
        assert_eq!(
            files(dir.path(), "snap-").len(),
            taken.len().min(3),
            "round {round}"
        );
        if round == 5 {
            break;
        }
        let trim = wal.finish_snapshot(lsn).expect("finish");
        // Forgotten by the log, still on disk until the trim runs (here on another thread).
        assert_eq!(files(dir.path(), "snap-").len(), taken.len().min(3));
        let trimmer = std::thread::spawn(move || trim.run());
        trimmer.join().expect("trim thread").expect("trim");
        assert_eq!(files(dir.path(), "snap-").len(), taken.len().min(2));
    }
    // A crash between the write and `finish_snapshot`: the new snapshot is the recovery
    // point, and every record from it on is there.
    drop(wal);
    let mut wal = check(dir.path(), Some((taken[4], &5u64.to_le_bytes())), &records);
    wal.finish_snapshot(taken[4])
        .and_then(wal::Trim::run)
        .expect("finish after reopening");
    let segments_live = files(dir.path(), "seg-").len();
    drop(wal);
    let snaps = files(dir.path(), "snap-");
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert!(snaps[0].contains(&format!("{:020}", taken[3])));
    // About 200 records of ~50 bytes fill 2-3 segments of 8 KiB per round: over 10
    // segments were written; only those from the older kept snapshot on are left.
    assert!(segments_live <= 7, "{segments_live} segments left");
    check(dir.path(), Some((taken[4], &5u64.to_le_bytes())), &records);
}

#[test]
fn a_damaged_newest_snapshot_falls_back_to_the_older_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = Wal::open(dir.path(), options()).expect("open");
    let mut records = Vec::new();
    append_n(&mut wal, &mut records, 200);
    wal.write_snapshot(100, b"older").expect("snapshot");
    append_n(&mut wal, &mut records, 200);
    wal.write_snapshot(300, b"newer").expect("snapshot");
    drop(wal);
    let newest = dir.path().join(format!("snap-{:020}.snap", 300));
    let mut bytes = std::fs::read(&newest).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    std::fs::write(&newest, &bytes).expect("write");

    // Verification refuses: it names the damaged snapshot.
    match inspect::verify_log(dir.path()) {
        Err(Error::Corruption { segment, .. }) => assert_eq!(segment, newest),
        other => panic!("verify gave {other:?}"),
    }
    let (_, recovered) = Wal::open(dir.path(), options()).expect("open");
    assert_eq!(
        recovered.snapshot.map(|s| (s.lsn, s.data)),
        Some((100, b"older".to_vec()))
    );
    assert_eq!(recovered.records[..], records[99..]);
    assert_eq!(recovered.report.damaged_snapshots, vec![newest]);
}

#[test]
fn snapshot_lsn_must_be_within_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = Wal::open(dir.path(), options()).expect("open");
    let mut records = Vec::new();
    append_n(&mut wal, &mut records, 3);
    for lsn in [0, 5, u64::MAX] {
        assert!(
            matches!(wal.write_snapshot(lsn, b""), Err(Error::InvalidArgument(_))),
            "{lsn}"
        );
    }
    wal.write_snapshot(4, b"").expect("the next LSN is allowed");
}

#[test]
fn inspect_recognises_log_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(!inspect::is_log_dir(dir.path()));
    assert!(!inspect::is_log_dir(&dir.path().join("missing")));
    let (wal, _) = Wal::open(dir.path(), options()).expect("open");
    drop(wal);
    assert!(inspect::is_log_dir(dir.path()));
    assert!(inspect::read_log(&dir.path().join("missing")).is_err());
}

/// Files of several MiB are written in synced 1 MiB steps (a new segment's zeros, a
/// snapshot): sizes that end off a step boundary come back byte for byte.
#[test]
fn files_written_in_steps_come_back_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        // Two and a half steps, so a new segment's zeros end mid-step.
        segment_size_bytes: (5 << 20) / 2,
        max_record_bytes: 64 << 10,
        ..Options::default()
    };
    let (mut wal, _) = Wal::open(dir.path(), options.clone()).expect("open");
    // ~6 MiB of records: three segments, each prepared (and zeroed) in steps.
    let mut records = Vec::new();
    let payloads = (0..100u32).map(|i| (0..60_000u32).map(|b| (b ^ i) as u8).collect());
    append_payloads(&mut wal, &mut records, 7, payloads);
    drop(wal);
    let (mut wal, recovered) = Wal::open(dir.path(), options.clone()).expect("reopen");
    assert_eq!(recovered.records, records);
    assert!(files(dir.path(), "seg-").len() >= 3);

    // A snapshot of 3 MiB and a bit, with no two steps alike.
    let data: Vec<u8> = (0..(3u32 << 20) + 1234)
        .map(|b| (b.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let lsn = wal.next_lsn();
    wal.write_snapshot(lsn, &data).expect("snapshot");
    drop(wal);
    let (_, recovered) = Wal::open(dir.path(), options).expect("reopen");
    assert_eq!(recovered.snapshot, Some(Snapshot { lsn, data }));
    assert!(recovered.records.is_empty());
}

/// Files over a removal step (8 MiB) are renamed to garbage, shortened a step at a time,
/// then deleted: a trim leaves nothing of them, and the leftover of a crash midway (a
/// shortened `.tmp` file) is deleted when the log opens.
#[test]
fn large_files_are_removed_in_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        // Over one removal step, so each removed segment shrinks once before its unlink.
        segment_size_bytes: 9 << 20,
        max_record_bytes: 64 << 10,
        ..Options::default()
    };
    let (mut wal, _) = Wal::open(dir.path(), options.clone()).expect("open");
    let mut records = Vec::new();
    // A MiB of records at a time, 16 of just under 64 KiB.
    let mut append_mib = |wal: &mut Wal, mib: u32| {
        let payloads = (0..mib * 16).map(|i| vec![i as u8; (64 << 10) - 64]);
        append_payloads(wal, &mut records, 3, payloads);
    };
    append_mib(&mut wal, 20);
    let first = wal.next_lsn();
    wal.write_snapshot(first, b"first").expect("snapshot");
    append_mib(&mut wal, 20);
    let second = wal.next_lsn();
    wal.write_snapshot(second, b"second").expect("snapshot");
    // The two segments wholly below the older kept snapshot are gone, garbage copies
    // included (a `.tmp` of the next segment may be in preparation).
    for removed in ["seg-0000000001.wal", "seg-0000000002.wal"] {
        assert_eq!(files(dir.path(), removed), Vec::<String>::new());
    }
    assert!(files(dir.path(), "seg-0000000003.wal").contains(&"seg-0000000003.wal".into()));
    drop(wal);

    // A crash halfway through removing a segment: its shortened garbage copy.
    let leftover = dir.path().join("seg-0000000002.wal.tmp");
    std::fs::write(&leftover, vec![7u8; 17 << 20]).expect("leftover");
    let (_, recovered) = Wal::open(dir.path(), options).expect("reopen");
    assert!(!leftover.exists());
    assert_eq!(
        recovered.snapshot,
        Some(Snapshot {
            lsn: second,
            data: b"second".to_vec(),
        })
    );
    assert!(recovered.records.is_empty());
}

/// `PendingSnapshot::run_streamed` takes the data in pieces as an encoder writes them
/// (here 7 bytes at a time, over several 1 MiB steps): the file is byte for byte the one
/// `run` writes from the whole data, and recovery returns the data.
#[test]
fn a_snapshot_streamed_in_small_writes_is_the_file_run_writes() {
    let data: Vec<u8> = (0..(2u32 << 20) + 77)
        .map(|b| (b.wrapping_mul(40_503) >> 7) as u8)
        .collect();
    let mut files_written = Vec::new();
    for streamed in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = Wal::open(dir.path(), options()).expect("open");
        let mut records = Vec::new();
        append_n(&mut wal, &mut records, 30);
        let lsn = wal.next_lsn();
        let pending = wal.begin_snapshot(lsn).expect("begin");
        if streamed {
            let (written_lsn, len_bytes) = pending
                .run_streamed(|out| data.chunks(7).try_for_each(|piece| out.write_all(piece)))
                .expect("run_streamed");
            assert_eq!((written_lsn, len_bytes), (lsn, data.len() as u64));
        } else {
            assert_eq!(pending.run(&data).expect("run"), lsn);
        }
        let name = files(dir.path(), "snap-").pop().expect("a snapshot file");
        files_written.push(std::fs::read(dir.path().join(name)).expect("read"));
        drop(wal);
        check(dir.path(), Some((lsn, &data)), &records);
    }
    assert!(files_written[0] == files_written[1], "the two files differ");
}
