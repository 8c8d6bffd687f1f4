//! The random source of the crate's seeded tests: `SEED=<n>` replays a run, otherwise a
//! fresh seed is drawn; either way it is printed so a failure can be replayed.

use rand::SeedableRng;

pub(crate) fn seeded_rng() -> rand::rngs::StdRng {
    let seed: u64 = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("SEED={seed}");
    rand::rngs::StdRng::seed_from_u64(seed)
}
