//! WAL append throughput: 100-byte records under each sync policy, group commit under
//! `Always` with batches of 1, 64 and 512 records, many producers feeding one owner, many
//! producers sharing the log through `wal::GroupCommit`, and recovery speed.
//! Run: `cargo bench --bench wal` (one case: `cargo bench --bench wal -- group_commit/64`).
//!
//! The two multi-producer designs, measured in the same run:
//! - `producers_{policy}/N` (the old design): each producer sends its record to one owner
//!   thread through a channel and waits for the acknowledgement; the owner appends what
//!   has arrived, commits (syncing under `Always`) and acknowledges the batch. No append
//!   happens while the owner syncs.
//! - `group_commit/N` (the new one): the log behind a lock; each producer appends its own
//!   record and sleeps until a sync covers it, while a syncer thread syncs what is
//!   appended (`Wal::begin_sync`) outside the lock, so appends go on during a sync.
//!
//! Both are bound by the sync with 64 producers: each has one record in flight, so a sync
//! covers at most 64 (about 50 for the owner, 40 for `GroupCommit`, whose syncs alternate
//! between the producers woken by the previous one and the rest). Figures and the
//! conditions they were measured in: README.md, "Performance".

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wal::{GroupCommit, Options, SyncPolicy, Wal, WalStats};

/// The record size the engine mostly writes (a click).
const RECORD_BYTES: usize = 100;
/// Records between snapshots in the long-running benches, so old segments are deleted and
/// the temp directory stays small.
const SNAPSHOT_EVERY_RECORDS: u64 = 1 << 20;

fn open(dir: &std::path::Path, sync: SyncPolicy) -> Wal {
    let options = Options {
        sync,
        ..Options::default()
    };
    Wal::open(dir, options).expect("open").0
}

/// Appends `n` records (committing every `batch`) and returns the time it took.
fn append_run(wal: &mut Wal, n: u64, batch: u64) -> Duration {
    let payload = [0x5Au8; RECORD_BYTES];
    let start = Instant::now();
    for i in 0..n {
        wal.append(1, &payload).expect("append");
        if (i + 1).is_multiple_of(batch) {
            wal.commit().expect("commit");
        }
        let lsn = wal.next_lsn();
        if lsn.is_multiple_of(SNAPSHOT_EVERY_RECORDS) {
            wal.write_snapshot(lsn, b"bench").expect("snapshot");
        }
    }
    wal.commit().expect("commit");
    start.elapsed()
}

fn policies(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_100B");
    group.throughput(Throughput::Elements(1));
    for (name, sync) in [
        ("never", SyncPolicy::Never),
        (
            "interval_5ms",
            SyncPolicy::Interval(Duration::from_millis(5)),
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = open(dir.path(), sync);
        group.bench_function(name, |b| b.iter_custom(|n| append_run(&mut wal, n, 1)));
    }
    group.finish();
}

fn commit_batches(c: &mut Criterion) {
    let mut group = c.benchmark_group("always_commit_batch");
    group.sample_size(20);
    for batch in [1u64, 64, 512] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = open(dir.path(), SyncPolicy::Always);
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter_custom(|n| append_run(&mut wal, n * batch, batch));
        });
        let stats = wal.stats();
        println!(
            "always batch {batch}: {} records, {} syncs, mean batch per sync {:.1}",
            stats.records_appended,
            stats.syncs,
            stats.records_appended as f64 / stats.syncs.max(1) as f64
        );
    }
    group.finish();
}

/// Producers send records to one owner thread, which appends whatever is queued and
/// commits once (the shard actor's loop), then acknowledges each record.
fn producers(c: &mut Criterion) {
    for (name, policy) in [
        ("never", SyncPolicy::Never),
        (
            "interval_5ms",
            SyncPolicy::Interval(Duration::from_millis(5)),
        ),
        ("always", SyncPolicy::Always),
    ] {
        producers_under(c, name, policy);
    }
}

/// Many producer threads each send a record and wait for its acknowledgement; one owner
/// batches what has arrived, appends it, commits once, and acknowledges the batch.
fn producers_under(c: &mut Criterion, name: &str, policy: SyncPolicy) {
    let mut group = c.benchmark_group(format!("producers_{name}"));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    let mut batches = Vec::new();
    for producers in [1usize, 16, 64] {
        // One log per producer count, opened outside the measurement: opening prepares a
        // segment in the background, whose zeroing would compete with the syncs measured.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = open(dir.path(), policy);
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(
            BenchmarkId::from_parameter(producers),
            &producers,
            |b, &producers| {
                b.iter_custom(|n| {
                    let before = wal.stats();
                    let (tx, rx) = mpsc::channel::<mpsc::Sender<u64>>();
                    let per_producer = n.div_ceil(producers as u64);
                    let start = Instant::now();
                    let handles: Vec<_> = (0..producers)
                        .map(|_| {
                            let tx = tx.clone();
                            std::thread::spawn(move || {
                                let (ack_tx, ack_rx) = mpsc::channel();
                                for _ in 0..per_producer {
                                    tx.send(ack_tx.clone()).expect("send");
                                    ack_rx.recv().expect("ack");
                                }
                            })
                        })
                        .collect();
                    drop(tx);
                    let payload = [0x5Au8; RECORD_BYTES];
                    let mut waiting = Vec::new();
                    while let Ok(first) = rx.recv() {
                        waiting.push(first);
                        waiting.extend(rx.try_iter());
                        for _ in &waiting {
                            wal.append(1, &payload).expect("append");
                        }
                        wal.commit().expect("commit");
                        for ack in waiting.drain(..) {
                            let _ = ack.send(0);
                        }
                    }
                    for h in handles {
                        h.join().expect("producer");
                    }
                    let elapsed = start.elapsed();
                    batches.push(batch_per_sync(&before, &wal.stats()));
                    elapsed
                });
            },
        );
        report_mean_batch(&format!("{name}, {producers} producers"), &mut batches);
    }
    group.finish();
}

/// Many producer threads each append a record through one shared `GroupCommit` and wait
/// until it is durable: what `producers_always` measures, without the owner thread.
fn group_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("group_commit");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    let mut batches = Vec::new();
    for producers in [1usize, 16, 64] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Arc::new(GroupCommit::new(open(dir.path(), SyncPolicy::Always)).expect("start"));
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(
            BenchmarkId::from_parameter(producers),
            &producers,
            |b, &producers| {
                b.iter_custom(|n| {
                    let before = log.stats().expect("stats");
                    let per_producer = n.div_ceil(producers as u64);
                    let start = Instant::now();
                    let handles: Vec<_> = (0..producers)
                        .map(|_| {
                            let log = Arc::clone(&log);
                            std::thread::spawn(move || {
                                let payload = [0x5Au8; RECORD_BYTES];
                                for _ in 0..per_producer {
                                    log.append_durable(1, &payload).expect("append");
                                }
                            })
                        })
                        .collect();
                    for h in handles {
                        h.join().expect("producer");
                    }
                    let elapsed = start.elapsed();
                    batches.push(batch_per_sync(&before, &log.stats().expect("stats")));
                    elapsed
                });
            },
        );
        report_mean_batch(
            &format!("group commit, {producers} producers"),
            &mut batches,
        );
    }
    group.finish();
}

/// Records per sync between two readings of a log's counters.
fn batch_per_sync(before: &WalStats, after: &WalStats) -> f64 {
    let records = after.records_appended - before.records_appended;
    let syncs = after.syncs - before.syncs;
    records as f64 / syncs.max(1) as f64
}

/// Prints the mean of the batches measured for one case, and forgets them. Criterion skips
/// filtered-out benches without running them: then there is nothing to report.
fn report_mean_batch(case: &str, batches: &mut Vec<f64>) {
    if !batches.is_empty() {
        let mean = batches.iter().sum::<f64>() / batches.len() as f64;
        println!("{case}: mean batch per sync {mean:.1}");
    }
    batches.clear();
}

fn recovery(c: &mut Criterion) {
    const RECORDS: u64 = 1_000_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = open(dir.path(), SyncPolicy::Never);
    let payload = [0x5Au8; RECORD_BYTES];
    for _ in 0..RECORDS {
        wal.append(1, &payload).expect("append");
    }
    wal.sync().expect("sync");
    drop(wal);
    let mut group = c.benchmark_group("recovery");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RECORDS));
    group.bench_function("1M_records_100B", |b| {
        b.iter(|| {
            let (_, recovered) = Wal::open(dir.path(), Options::default()).expect("open");
            assert_eq!(recovered.records.len() as u64, RECORDS);
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    policies,
    commit_batches,
    producers,
    group_commit,
    recovery
);
criterion_main!(benches);
