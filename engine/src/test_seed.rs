//! The seed of the crate's randomised unit tests: `SEED=<n>` replays a run, otherwise a
//! fresh one is drawn; either way it is printed so a failure can be replayed.

pub(crate) fn seed() -> u64 {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("SEED={seed}");
    seed
}
