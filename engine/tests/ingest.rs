//! Bulk click ingestion (`Engine::click_batch`): the same decisions as one click at a
//! time (rejections skipped, uniqueness by fingerprint), counted, and durable.

mod common;

use common::*;
use engine::*;

async fn totals(e: &Engine) -> (u64, u64) {
    let t = report_totals(e).await;
    (
        t["clicks"].as_u64().unwrap_or(0),
        t["unique_clicks"].as_u64().unwrap_or(0),
    )
}

/// (shards, visitors of the accepted clicks, expected (recorded, clicks, unique clicks)).
async fn check(shards: usize, visitors: &[u8], expected: (usize, u64, u64)) {
    let mut h = Harness::new(shards, |_| {});
    let mut requests: Vec<ClickRequest> =
        visitors.iter().map(|&v| click_request(1, 7, v)).collect();
    // Neither of these is recorded: an unknown campaign, and an untracked click.
    requests.push(click_request(999, 7, 1));
    let mut untracked = click_request(1, 7, 2);
    untracked.track = false;
    requests.push(untracked);
    let recorded = h.engine().click_batch(requests).await;
    let (clicks, unique) = totals(h.engine()).await;
    assert_eq!(
        (recorded, clicks, unique),
        expected,
        "shards {shards}, visitors {visitors:?}"
    );
    h.crash_and_reopen(shards);
    assert_eq!(
        totals(h.engine()).await,
        (expected.1, expected.2),
        "after recovery"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_batch_records_counts_and_persists() {
    check(1, &[], (0, 0, 0)).await;
    check(1, &[1, 2, 3], (3, 3, 3)).await;
    // The same visitor twice within the unique window: one duplicate.
    check(1, &[1, 2, 2], (3, 3, 2)).await;
    check(3, &[1, 2, 3, 4, 4, 5], (6, 6, 5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_batch_larger_than_one_shard_batch() {
    let n = MORE_THAN_ONE_COMMAND;
    let visitors: Vec<u8> = (0..n).map(|i| (i % 200) as u8).collect();
    check(2, &visitors, (n, n as u64, 200)).await;
}

/// More clicks than one shard command carries (the shard's batch bound is 1024), so the
/// batch is split across commands.
const MORE_THAN_ONE_COMMAND: usize = 1029;
