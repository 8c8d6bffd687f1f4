//! Repair: a checksum failure before the torn tail stops start-up with the segment and
//! offset; `storage.repair` (`clicktrail serve --repair`) starts anyway, dropping exactly the
//! damaged record, and makes the repair permanent so a strict start-up works again.

mod common;

use common::*;
use engine::*;

/// Bytes before the first record of a segment: its header page.
const SEGMENT_HEADER_BYTES: u64 = 4096;
/// A record's header, before its payload.
const RECORD_HEADER_BYTES: u64 = 32;

fn shard_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let shard = dir.join("shard-000");
    let mut segments: Vec<_> = std::fs::read_dir(&shard)
        .expect("shard dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seg-") && n.ends_with(".wal"))
        })
        .collect();
    segments.sort();
    segments.into_iter().next().expect("a segment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_stops_start_up_until_the_operator_repairs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::config(dir.path(), 1);
    let clock = std::sync::Arc::new(ManualClock::new(T0_MS));
    let engine = Engine::open(config.clone(), clock.clone()).expect("engine opens");
    let mut clicks = Vec::new();
    for v in 0..3 {
        // One click per batch, so each later record shows the earlier ones were durable.
        clicks.push(click_id(&engine, click_request(1, 7, v)).await);
    }
    engine.shutdown().await;
    drop(engine);

    // Flip a payload byte of the first click record.
    let segment = shard_segment(&config.storage.data_dir);
    let mut bytes = std::fs::read(&segment).expect("read segment");
    let at = (SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + 4) as usize;
    bytes[at] ^= 0x40;
    std::fs::write(&segment, &bytes).expect("write segment");

    let refused = Engine::open(config.clone(), clock.clone())
        .err()
        .expect("strict open refuses");
    let text = refused.to_string();
    assert!(
        text.contains("corrupt") && text.contains("shard-000"),
        "{text}"
    );

    let mut repair = config.clone();
    repair.storage.repair = true;
    let engine = Engine::open(repair, clock.clone()).expect("repair opens");
    assert!(
        engine.click_view(&clicks[0]).await.is_none(),
        "damaged click dropped"
    );
    for id in &clicks[1..] {
        assert!(
            engine.click_view(id).await.is_some(),
            "undamaged click {id} kept"
        );
    }
    engine.shutdown().await;
    drop(engine);

    let engine = Engine::open(config, clock).expect("strict open after repair");
    assert!(engine.click_view(&clicks[2]).await.is_some());
    engine.shutdown().await;
}
