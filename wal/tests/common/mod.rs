//! Helpers shared by the wal integration tests.
#![allow(dead_code)]

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

/// Runs `body` for seeds `0..count`, or only for `SEED` when set in the environment, and
/// names the failing seed so it can be replayed with `SEED=<n>`.
pub fn for_each_seed(test: &str, count: u64, mut body: impl FnMut(u64)) {
    let seeds: Vec<u64> = match std::env::var("SEED") {
        Ok(s) => vec![s.trim().parse().expect("SEED must be a u64")],
        Err(_) => (0..count).collect(),
    };
    println!(
        "{test}: seeds {:?}..={:?} (replay one with SEED=<n>)",
        seeds.first(),
        seeds.last()
    );
    for seed in seeds {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| body(seed))) {
            eprintln!("{test}: FAILED at seed {seed}; replay with SEED={seed}");
            resume_unwind(panic);
        }
    }
}

/// A payload whose bytes depend on `lsn`, so a record from the wrong place never matches.
pub fn payload(lsn: u64, len: usize) -> Vec<u8> {
    let mut x = lsn.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
