//! The record decoder under damage it was never meant to see (issue 7): a log written
//! through the public API, then bit-flipped, overwritten with garbage, zeroed or cut at
//! random places, and recovered in both modes. Recovery never panics; it either refuses
//! with a typed error, or returns records every one of which is exactly the record
//! appended under that LSN, in LSN order (nothing invented, nothing altered). Strict mode
//! returns a gap-free run from the first record. Seeded: the seed is printed and `SEED=`
//! replays a run.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use wal::storage::SimDisk;
use wal::{Error, Options, RecoveryMode, SyncPolicy, Wal};

/// Cases: each writes and recovers a small log on the simulated disk.
const CASES: u32 = 300;
/// Small segments, so a log spans several and damage can hit headers and middles.
const SEGMENT_BYTES: u64 = 8 << 10;
const MAX_RECORD_BYTES: u32 = 600;

#[derive(Clone, Debug)]
enum Damage {
    FlipBit { at: usize, bit: u8 },
    Garbage { at: usize, bytes: Vec<u8> },
    Zero { at: usize, len: usize },
    Cut { at: usize },
}

fn damage() -> impl Strategy<Value = Damage> {
    // Offsets are drawn over a whole segment and taken modulo the file's length.
    let at = 0usize..SEGMENT_BYTES as usize;
    prop_oneof![
        (at.clone(), 0u8..8).prop_map(|(at, bit)| Damage::FlipBit { at, bit }),
        (at.clone(), proptest::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, bytes)| Damage::Garbage { at, bytes }),
        (at.clone(), 1usize..256).prop_map(|(at, len)| Damage::Zero { at, len }),
        at.prop_map(|at| Damage::Cut { at }),
    ]
}

fn apply(bytes: &mut Vec<u8>, damage: &Damage) {
    if bytes.is_empty() {
        return;
    }
    let len = bytes.len();
    match damage {
        Damage::FlipBit { at, bit } => bytes[at % len] ^= 1 << bit,
        Damage::Garbage { at, bytes: junk } => {
            let start = at % len;
            for (i, b) in junk.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(start + i) {
                    *slot = *b;
                }
            }
        }
        Damage::Zero { at, len: n } => {
            let start = at % len;
            let end = (start + n).min(len);
            bytes[start..end].fill(0);
        }
        Damage::Cut { at } => bytes.truncate(at % len),
    }
}

fn seed() -> u64 {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("decoder_prop SEED={seed}");
    seed
}

#[test]
fn damaged_logs_never_yield_invented_records() {
    let seed = seed();
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let strategy = (
        proptest::collection::vec(
            (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..400)),
            1..60,
        ),
        proptest::collection::vec((any::<usize>(), damage()), 1..4),
        any::<bool>(),
    );
    // What the damage did, so the test fails if it stops reaching the decoder.
    let refused = std::cell::Cell::new(0u32);
    let shortened = std::cell::Cell::new(0u32);
    let result = runner.run(&strategy, |(records, damages, lossy)| {
        let options = Options {
            segment_size_bytes: SEGMENT_BYTES,
            max_record_bytes: MAX_RECORD_BYTES,
            sync: SyncPolicy::Always,
            recovery: if lossy {
                RecoveryMode::Lossy
            } else {
                RecoveryMode::Strict
            },
        };
        let disk = SimDisk::new();
        let mut appended = Vec::new();
        {
            let (mut wal, _) = Wal::open_on(Arc::new(disk.clone()), options.clone())
                .map_err(|e| TestCaseError::fail(format!("open: {e}")))?;
            for (kind, payload) in &records {
                let lsn = wal
                    .append(*kind, payload)
                    .map_err(|e| TestCaseError::fail(format!("append: {e}")))?;
                appended.push((lsn, *kind, payload.clone()));
            }
            wal.commit()
                .map_err(|e| TestCaseError::fail(format!("commit: {e}")))?;
        }
        let segments: Vec<String> = disk
            .file_names()
            .into_iter()
            .filter(|n| n.ends_with(".wal"))
            .collect();
        prop_assert!(!segments.is_empty());
        for (pick, d) in &damages {
            let name = &segments[pick % segments.len()];
            let mut bytes = disk.file(name).unwrap_or_default();
            apply(&mut bytes, d);
            disk.set_file(name, &bytes);
        }

        match Wal::open_on(Arc::new(disk.clone()), options) {
            Err(Error::Corruption { .. } | Error::Io(_) | Error::InvalidArgument(_)) => {
                refused.set(refused.get() + 1);
            }
            Err(e) => return Err(TestCaseError::fail(format!("unexpected error: {e}"))),
            Ok((_, recovered)) => {
                prop_assert!(recovered.snapshot.is_none());
                if recovered.records.len() < appended.len() {
                    shortened.set(shortened.get() + 1);
                }
                let mut last = 0;
                for r in &recovered.records {
                    prop_assert!(r.lsn > last, "LSN order: {} after {last}", r.lsn);
                    let original = appended.iter().find(|(lsn, _, _)| *lsn == r.lsn);
                    let Some((_, kind, payload)) = original else {
                        return Err(TestCaseError::fail(format!("invented LSN {}", r.lsn)));
                    };
                    prop_assert_eq!(r.kind, *kind, "kind of LSN {}", r.lsn);
                    prop_assert!(&r.payload == payload, "payload of LSN {} altered", r.lsn);
                    if !lossy {
                        prop_assert!(
                            last == 0 && r.lsn == appended[0].0 || r.lsn == last + 1,
                            "strict recovery skipped from {last} to {}",
                            r.lsn
                        );
                    }
                    last = r.lsn;
                }
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("SEED={seed}: {e}");
    }
    println!(
        "refused {} logs, recovered {} shortened",
        refused.get(),
        shortened.get()
    );
    assert!(
        refused.get() > 0 && shortened.get() > 0,
        "SEED={seed}: damage never reached the decoder"
    );
}
