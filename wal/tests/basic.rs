//! The log's behaviour through its public API on real files: appends come back in order
//! after reopening, across segments, with limits and group commit as documented.

use std::path::Path;

use wal::{Error, Options, Record, SyncPolicy, Wal};

/// Small segments so a few hundred records span several of them.
fn small_options() -> Options {
    Options {
        segment_size_bytes: 16 << 10,
        max_record_bytes: 1024,
        ..Options::default()
    }
}

fn payload(i: u64) -> Vec<u8> {
    let len = (i * 37 % 300) as usize;
    (0..len).map(|j| (i as usize + j) as u8).collect()
}

/// Appends `count` records (kind = i % 7) in batches of `batch`, committing each batch, and
/// returns what was appended.
fn append_batches(wal: &mut Wal, first: u64, count: u64, batch: u64) -> Vec<Record> {
    let mut out = Vec::new();
    for i in first..first + count {
        let p = payload(i);
        let lsn = wal.append((i % 7) as u8, &p).expect("append");
        out.push(Record {
            lsn,
            kind: (i % 7) as u8,
            payload: p,
        });
        if (i + 1 - first).is_multiple_of(batch) {
            wal.commit().expect("commit");
        }
    }
    wal.commit().expect("commit");
    out
}

/// Opens `dir` and checks that recovery returns exactly `expected`, with no damage reported.
fn check(dir: &Path, options: &Options, expected: &[Record]) -> Wal {
    let (wal, recovered) = Wal::open(dir, options.clone()).expect("open");
    assert_eq!(recovered.records.len(), expected.len(), "record count");
    assert_eq!(recovered.records, expected);
    assert_eq!(recovered.report.torn_tail_bytes, 0);
    assert!(recovered.report.dropped.is_empty());
    let next = expected.last().map_or(1, |r| r.lsn + 1);
    assert_eq!(wal.next_lsn(), next);
    wal
}

fn segment_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .count()
}

#[test]
fn empty_log_opens_at_lsn_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = check(dir.path(), &small_options(), &[]);
    drop(wal);
    check(dir.path(), &small_options(), &[]);
}

#[test]
fn records_come_back_after_reopen_and_appends_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options::default();
    let (mut wal, _) = Wal::open(dir.path(), options.clone()).expect("open");
    let mut expected = append_batches(&mut wal, 0, 100, 10);
    assert_eq!(expected.first().map(|r| r.lsn), Some(1));
    drop(wal);
    let mut wal = check(dir.path(), &options, &expected);
    expected.extend(append_batches(&mut wal, 100, 50, 7));
    drop(wal);
    check(dir.path(), &options, &expected);
}

#[test]
fn records_span_segments_and_recover_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = small_options();
    let (mut wal, _) = Wal::open(dir.path(), options.clone()).expect("open");
    let mut expected = append_batches(&mut wal, 0, 600, 13);
    drop(wal);
    assert!(segment_count(dir.path()) >= 5, "expected several segments");
    let mut wal = check(dir.path(), &options, &expected);
    expected.extend(append_batches(&mut wal, 600, 300, 64));
    drop(wal);
    check(dir.path(), &options, &expected);
}

#[test]
fn unsynced_appends_survive_a_clean_close_under_never() {
    // A process exit keeps the page cache: records appended under `Never` come back.
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        sync: SyncPolicy::Never,
        ..small_options()
    };
    let (mut wal, _) = Wal::open(dir.path(), options.clone()).expect("open");
    let expected = append_batches(&mut wal, 0, 300, 300);
    let syncs = wal.stats().syncs;
    drop(wal);
    // Only rotations sync: every full segment is made durable before the next is used.
    assert_eq!(syncs, segment_count(dir.path()) as u64 - 2);
    check(dir.path(), &options, &expected);
}

#[test]
fn record_size_limit_is_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = small_options();
    let (mut wal, _) = Wal::open(dir.path(), options.clone()).expect("open");
    let max = options.max_record_bytes as usize;
    let cases: &[(usize, bool)] = &[
        (0, true),
        (1, true),
        (max, true),
        (max + 1, false),
        (10 * max, false),
    ];
    let mut expected = Vec::new();
    for &(len, ok) in cases {
        let p = vec![0xA5; len];
        match wal.append(3, &p) {
            Ok(lsn) => {
                assert!(ok, "{len} bytes accepted");
                expected.push(Record {
                    lsn,
                    kind: 3,
                    payload: p,
                });
            }
            Err(Error::RecordTooLarge { len: got, max: m }) => {
                assert!(!ok, "{len} bytes refused");
                assert_eq!((got, m), (len, options.max_record_bytes));
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    wal.commit().expect("commit");
    drop(wal);
    check(dir.path(), &options, &expected);
}

#[test]
fn impossible_options_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        Options {
            segment_size_bytes: 100,
            ..Options::default()
        },
        Options {
            segment_size_bytes: 8192,
            max_record_bytes: 8192,
            ..Options::default()
        },
        Options {
            sync: SyncPolicy::Interval(std::time::Duration::ZERO),
            ..Options::default()
        },
    ];
    for options in cases {
        match Wal::open(dir.path(), options.clone()) {
            Err(Error::InvalidArgument(_)) => {}
            other => panic!("{options:?} gave {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn always_syncs_once_per_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = Wal::open(dir.path(), Options::default()).expect("open");
    for batch in [1u64, 64, 512] {
        let before = wal.stats();
        for i in 0..batch {
            wal.append(1, &payload(i)).expect("append");
        }
        wal.commit().expect("commit");
        let after = wal.stats();
        assert_eq!(after.syncs - before.syncs, 1, "batch of {batch}");
        assert_eq!(after.last_sync_batch_records, batch);
        assert_eq!(after.records_appended - before.records_appended, batch);
        // Nothing new to sync: no extra sync.
        wal.commit().expect("commit");
        assert_eq!(wal.stats().syncs, after.syncs);
    }
}

#[test]
fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_wal, _) = Wal::open(dir.path(), Options::default()).expect("open");
    assert!(matches!(
        Wal::open(dir.path(), Options::default()),
        Err(Error::Io(_))
    ));
}

#[test]
fn the_log_can_move_to_its_owner_thread() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Wal>();
    assert_send::<wal::Recovered>();
    assert_send::<Error>();
}

#[test]
fn verify_summarises_a_healthy_log_without_changing_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = small_options();
    let (mut wal, _) = Wal::open(dir.path(), options.clone()).expect("open");
    let expected = append_batches(&mut wal, 0, 400, 50);
    drop(wal);
    let listing = |dir: &Path| {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .expect("read_dir")
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).expect("read"),
                )
            })
            .collect();
        files.sort();
        files
    };
    let before = listing(dir.path());
    let summary = wal::inspect::verify_log(dir.path()).expect("verify");
    assert_eq!(summary.records, 400);
    assert_eq!(
        summary.segments,
        segment_count(dir.path()) - 1,
        "all but the prepared one"
    );
    assert_eq!(summary.next_lsn, 401);
    assert_eq!((summary.snapshots, summary.snapshot_lsn), (0, None));
    assert_eq!((summary.torn_tail_bytes, summary.torn_tail_records), (0, 0));
    let (snapshot, records) = wal::inspect::read_log(dir.path()).expect("read_log");
    assert_eq!((snapshot, records), (None, expected));
    assert!(before == listing(dir.path()), "inspection changed the log");
}
