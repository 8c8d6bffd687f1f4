//! Resident memory per stored click (issue 3's target: at most 128 bytes at 10 M clicks,
//! every index included). Ingests `CLICKS` clicks (default 1 M) through the engine on one
//! shard (`sync = never`, snapshots off) and reports anonymous resident memory (heap;
//! the mapped log segments are file-backed and not counted) before and after, and the
//! engine's own accounting of its click store and indexes.
//!
//! `cargo bench --bench engine_memory` or `CLICKS=10000000 cargo bench --bench engine_memory`

use engine::*;
use std::sync::Arc;

/// Requests in flight at once.
const CONCURRENCY: usize = 512;

fn rss_anon_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("RssAnon:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    // `cargo bench` passes `--bench`; any other run (e.g. `cargo test --benches`) is a smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let clicks: u64 = std::env::var("CLICKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if smoke { 10_000 } else { 1_000_000 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EngineConfig {
        storage: StorageConfig {
            data_dir: dir.path().to_path_buf(),
            shards: 1,
            sync: SyncMode::Never,
            snapshot_every_records: u64::MAX,
            ..StorageConfig::default()
        },
        campaigns: vec![Campaign {
            id: 1,
            landing_url: "https://shop.example/?ref={click_id}".into(),
            ..Campaign::default()
        }],
        affiliates: (1..=50)
            .map(|id| Affiliate {
                id,
                ..Affiliate::default()
            })
            .collect(),
        ..EngineConfig::default()
    };
    runtime.block_on(async move {
        let engine = Engine::open(config, Arc::new(SystemClock)).expect("engine");
        let before = rss_anon_bytes();
        let start = std::time::Instant::now();
        let mut set = tokio::task::JoinSet::new();
        let mut next = 0u64;
        while next < clicks || !set.is_empty() {
            while next < clicks && set.len() < CONCURRENCY {
                let engine = engine.clone();
                let i = next;
                set.spawn(async move {
                    // Realistic repetition: 50 affiliates, 100 distinct sub IDs, a new
                    // visitor (fingerprint) for every click.
                    let request = ClickRequest {
                        source: Source {
                            campaign_id: 1,
                            affiliate_id: 1 + (i % 50) as u32,
                            creative_id: Some((i % 7) as u32),
                            sub_ids: vec![format!("sub-{}", i % 100)],
                            extras: Vec::new(),
                        },
                        visitor: Visitor {
                            ip: std::net::IpAddr::V4(std::net::Ipv4Addr::from(i as u32)),
                            user_agent: "Mozilla/5.0 memory".into(),
                            accept_language: "en".into(),
                        },
                        cookie_click_id: None,
                        track: true,
                    };
                    let _ = engine.click(request).await;
                });
                next += 1;
            }
            let _ = set.join_next().await;
        }
        let elapsed = start.elapsed();
        let after = rss_anon_bytes();
        let (held, store_bytes) = engine.click_memory().await;
        println!(
            "clicks ingested: {clicks} in {:.1} s ({:.0} clicks/s)",
            elapsed.as_secs_f64(),
            clicks as f64 / elapsed.as_secs_f64()
        );
        println!("clicks held: {held}");
        println!(
            "anonymous RSS growth: {} bytes = {:.1} bytes/click",
            after.saturating_sub(before),
            after.saturating_sub(before) as f64 / clicks as f64
        );
        println!(
            "click store + ID and fingerprint indexes: {store_bytes} bytes = {:.1} bytes/click",
            store_bytes as f64 / held.max(1) as f64
        );
        engine.shutdown().await;
    });
}
