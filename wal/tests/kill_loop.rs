//! Kill loop: a child process appends under `SyncPolicy::Always` and reports each
//! acknowledged LSN through a pipe; the parent SIGKILLs it at a random moment, then checks
//! that every reported LSN is recovered, in order, with its payload. The child is this same
//! test binary, re-run with `CHILD_DIR_ENV` set (see `child_process_entry`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wal::{inspect, Options, Wal};

/// Set in the child's environment: the log directory to append to.
const CHILD_DIR_ENV: &str = "WAL_KILL_LOOP_CHILD_DIR";
/// Set in the child's environment: its seed, for batch and payload sizes.
const CHILD_SEED_ENV: &str = "WAL_KILL_LOOP_CHILD_SEED";
/// Rounds of spawn, append, kill, verify.
const ROUNDS: u64 = 50;
/// Most acknowledgements awaited before a kill: keeps a round to a few dozen syncs.
const MAX_ACKS_BEFORE_KILL: u64 = 40;

fn options() -> Options {
    Options {
        // Small segments, so rotation and snapshot deletion happen under the kills.
        segment_size_bytes: 64 << 10,
        max_record_bytes: 4096,
        ..Options::default()
    }
}

fn payload(lsn: u64) -> Vec<u8> {
    common::payload(lsn, (lsn % 300) as usize)
}

/// The child's body; returns at once in a normal test run.
#[test]
fn child_process_entry() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(CHILD_SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut wal, _) = Wal::open(Path::new(&dir), options()).expect("child open");
    let mut out = std::io::stdout().lock();
    loop {
        for _ in 0..rng.random_range(1..=32) {
            let lsn = wal.next_lsn();
            wal.append(1, &payload(lsn)).expect("child append");
        }
        wal.commit().expect("child commit");
        let acked = wal.next_lsn() - 1;
        writeln!(out, "ACK {acked}").expect("pipe");
        out.flush().expect("pipe");
        if rng.random_bool(0.05) {
            let lsn = wal.next_lsn();
            wal.write_snapshot(lsn, &lsn.to_le_bytes())
                .expect("child snapshot");
        }
    }
}

#[test]
fn every_acknowledged_record_survives_sigkill() {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0x4B11);
    println!("kill_loop: seed {seed} (replay with SEED=<n>)");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut acked_max = 0u64;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_process_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_SEED_ENV, rng.random::<u64>().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let kill_after = rng.random_range(1..=MAX_ACKS_BEFORE_KILL);
        let mut acks = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read pipe");
            if let Some(lsn) = line.strip_prefix("ACK ") {
                let lsn: u64 = lsn.parse().expect("ACK lsn");
                assert!(
                    lsn >= acked_max,
                    "round {round}: acknowledgements go forward"
                );
                acked_max = lsn;
                acks += 1;
                if acks == kill_after {
                    break;
                }
            }
        }
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert!(
            acks == kill_after,
            "round {round}: child exited early ({status})"
        );

        let (snapshot, records) = inspect::read_log(dir.path())
            .unwrap_or_else(|e| panic!("round {round}: recovery failed: {e}"));
        let start = snapshot.as_ref().map_or(1, |s| s.lsn);
        if let Some(s) = &snapshot {
            assert_eq!(s.data, s.lsn.to_le_bytes(), "round {round}: snapshot data");
        }
        for (i, record) in records.iter().enumerate() {
            assert_eq!(record.lsn, start + i as u64, "round {round}: order");
            assert_eq!(
                record.payload,
                payload(record.lsn),
                "round {round}: payload"
            );
        }
        let end = start + records.len() as u64;
        assert!(
            end > acked_max,
            "round {round}: acknowledged LSN {acked_max} lost (log ends at {end})"
        );
    }
    println!("kill_loop: {ROUNDS} rounds, last acknowledged LSN {acked_max}");
}
