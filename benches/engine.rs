//! Engine benchmarks without HTTP (issue 3), on real logs in temporary directories with
//! `sync = never`:
//!
//! - `memory_per_click` (run first, in a fresh process, before anything else allocates):
//!   ingests `CLICKS` clicks (default 1 M) through the engine on one shard (snapshots off)
//!   and prints the growth of anonymous resident memory (heap; the mapped log segments are
//!   file-backed and not counted) and the engine's own accounting of its click store and
//!   indexes (`Engine::click_memory`), each per click. Target: at most 128 B per click at
//!   10 M clicks, every index included.
//! - `memory_per_conversion` (in a child process of its own, a fresh heap): `CONVERSIONS`
//!   clicks (default 200 k), then one server-to-server conversion by click ID of each, and
//!   the growth of anonymous resident memory over the conversions, per conversion: the
//!   conversion store with its strings, audit trail and indexes. Allocations per
//!   conversion request, HTTP included: `ROUTES=s2s benches/http/callgrind.sh`.
//! - criterion group `engine`: click ingest on one shard through the async API
//!   (`click_ingest_one_shard`) and handed over in batches (`click_ingest_one_shard_batched`,
//!   the shard's own apply path; target 1 M clicks/s), conversions by click ID
//!   (`conversion_by_click_id`) and browser-pixel conversions attributed by IP backup
//!   (`conversion_by_fingerprint`: no cookie, no ClickID, the IP, User-Agent and
//!   Accept-Language of an earlier click).
//! - criterion group `engine_recovery`: reopening a log of 200 k click records (every record
//!   replayed), in records/s. Target: 2 M records/s.
//!
//! Commands:
//! - everything: `cargo bench --bench engine`
//! - one part: `cargo bench --bench engine -- click_ingest` (a criterion filter, matched
//!   as a substring of `group/name`; a memory step runs only without a filter or with one
//!   its name contains, e.g. `-- memory` for both; fixtures of parts left out are not
//!   built)
//! - memory at 10 M clicks: `CLICKS=10000000 cargo bench --bench engine -- memory_per_click`
//! - memory per conversion: `cargo bench --bench engine -- memory_per_conversion`
//! - ingest without periodic snapshots (what they cost):
//!   `SNAPSHOT_EVERY_RECORDS=18446744073709551615 cargo bench --bench engine -- click_ingest`
//! - profile the batched ingest: build with `cargo bench --bench engine --no-run`, then
//!   `perf record -g target/release/deps/engine-<hash> --bench click_ingest_one_shard_batched
//!   --profile-time 20`
//!
//! Without `--bench` (`cargo test --benches`) it is a smoke run: a small memory step and
//! every criterion bench once, on small logs.

use criterion::{Criterion, Throughput};
use engine::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requests in flight at once: enough to fill a shard's group-commit batches.
const CONCURRENCY: usize = 256;
/// Requests in flight at once in the memory step.
const MEMORY_CONCURRENCY: usize = 512;
/// Clicks per `Engine::click_batch` call in the batched ingest: one mailbox command (the
/// shard's batch limit), so the figure is the shard's work plus minting and fingerprinting.
const BATCH: u64 = 1024;
/// Clicks the memory step ingests unless `CLICKS` says otherwise (the 1 M figure).
const MEMORY_CLICKS: u64 = 1_000_000;
/// Conversions the conversion memory step records unless `CONVERSIONS` says otherwise
/// (one click each; about 1 KB per click and conversion, so ~200 MB at this count).
const MEMORY_CONVERSIONS: u64 = 200_000;
/// Clicks of the recovery log (all replayed on reopen).
const RECOVERY_RECORDS: u64 = 200_000;
/// Distinct clicks the conversion benches convert against.
const CONVERSION_CLICKS: u64 = 20_000;
/// Sizes of the smoke run (`cargo test --benches`): enough to exercise every path.
const SMOKE_CLICKS: u64 = 2_000;

/// The engine's snapshot interval, or `SNAPSHOT_EVERY_RECORDS` from the environment (to
/// see what periodic full snapshots cost the ingest figures).
fn snapshot_every_records() -> u64 {
    std::env::var("SNAPSHOT_EVERY_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(StorageConfig::default().snapshot_every_records)
}

fn config(dir: &std::path::Path, shards: usize) -> EngineConfig {
    EngineConfig {
        storage: StorageConfig {
            data_dir: dir.to_path_buf(),
            shards,
            sync: SyncMode::Never,
            snapshot_every_records: snapshot_every_records(),
            ..StorageConfig::default()
        },
        campaigns: vec![Campaign {
            id: 1,
            landing_url: "https://shop.example/?ref={click_id}".into(),
            payout: 4.0,
            revenue: 10.0,
            ..Campaign::default()
        }],
        affiliates: vec![Affiliate {
            id: 7,
            ..Affiliate::default()
        }],
        ..EngineConfig::default()
    }
}

/// Visitor `i`: its own IPv4 address, one User-Agent and language for all.
fn visitor(i: u64) -> Visitor {
    Visitor {
        ip: std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0A00_0000 + (i as u32))),
        user_agent: "Mozilla/5.0 bench".into(),
        accept_language: "en".into(),
    }
}

fn click(i: u64) -> ClickRequest {
    ClickRequest {
        source: Source {
            campaign_id: 1,
            affiliate_id: 7,
            creative_id: None,
            sub_ids: vec![format!("s{}", i % 16)],
            extras: Vec::new(),
        },
        visitor: visitor(i),
        cookie_click_id: None,
        track: true,
    }
}

fn conversion(pixel_type: PixelType, event: String) -> ConversionRequest {
    ConversionRequest {
        pixel_type,
        click_id: None,
        source: Source::default(),
        cookies: Vec::new(),
        visitor: visitor(0),
        event,
        merchant_ref: None,
        payout_override: None,
        revenue_override: None,
        currency_override: None,
        total_sales: None,
        status: ConversionStatus::Approved,
        token: None,
    }
}

/// A browser pixel with neither cookie nor ClickID from visitor `v`: only IP backup (the
/// fingerprint index) can attribute it.
fn fingerprint_conversion(v: u64, event: String) -> ConversionRequest {
    let mut req = conversion(PixelType::Img, event);
    req.source.campaign_id = 1;
    req.visitor = visitor(v);
    req
}

/// Sends `n` requests, `CONCURRENCY` at a time, and returns the elapsed time.
async fn drive<F, Fut>(n: u64, concurrency: usize, f: F) -> Duration
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    let mut next = 0u64;
    let mut set = tokio::task::JoinSet::new();
    while next < n || !set.is_empty() {
        while next < n && set.len() < concurrency {
            set.spawn(f(next));
            next += 1;
        }
        let _ = set.join_next().await;
    }
    start.elapsed()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// CPU time of the whole process so far (every thread, user and system), from
/// `/proc/self/stat` in clock ticks (USER_HZ, 100 per second on Linux); 0 if unreadable.
/// On a shared machine CPU time per click varies far less than wall time per click.
fn process_cpu_ms() -> u64 {
    const MS_PER_TICK: u64 = 10;
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces): state is the 3rd
            // field, utime and stime the 14th and 15th.
            let rest = s.get(s.rfind(')')? + 2..)?;
            let mut fields = rest.split_whitespace().skip(11);
            let utime: u64 = fields.next()?.parse().ok()?;
            let stime: u64 = fields.next()?.parse().ok()?;
            Some((utime + stime) * MS_PER_TICK)
        })
        .unwrap_or(0)
}

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

/// Resident memory per stored click, every index included: `clicks` clicks through the
/// engine on one shard, with realistic repetition (50 affiliates, 100 distinct sub IDs,
/// 7 creatives) and a new visitor (fingerprint) for every click.
fn memory_per_click(clicks: u64) {
    let runtime = runtime();
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
        let writer = engine.clone();
        let elapsed = drive(clicks, MEMORY_CONCURRENCY, move |i| {
            let engine = writer.clone();
            async move {
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
            }
        })
        .await;
        let after = rss_anon_bytes();
        let (held, store_bytes) = engine.click_memory().await;
        println!("memory_per_click");
        println!(
            "  clicks ingested: {clicks} in {:.1} s ({:.0} clicks/s)",
            elapsed.as_secs_f64(),
            clicks as f64 / elapsed.as_secs_f64()
        );
        println!("  clicks held: {held}");
        println!(
            "  anonymous RSS growth: {} bytes = {:.1} bytes/click",
            after.saturating_sub(before),
            after.saturating_sub(before) as f64 / clicks.max(1) as f64
        );
        println!(
            "  click store + ID and fingerprint indexes: {store_bytes} bytes = {:.1} bytes/click",
            store_bytes as f64 / held.max(1) as f64
        );
        engine.shutdown().await;
    });
}

/// Resident memory per stored conversion: `conversions` clicks on one shard (as in
/// [`memory_per_click`], one visitor each), then one server-to-server conversion by click
/// ID per click, the common case (attributed, campaign money, no delivery); the growth of
/// anonymous RSS over the conversions alone is divided by the conversions recorded. Runs in
/// its own process (see [`MEMORY_CONVERSION_CHILD`]) so memory freed by the click step is
/// not reused here, which would understate the growth.
fn memory_per_conversion(conversions: u64) {
    let runtime = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path(), 1);
    config.storage.snapshot_every_records = u64::MAX;
    runtime.block_on(async move {
        let engine = Engine::open(config, Arc::new(SystemClock)).expect("engine");
        let mut ids = Vec::with_capacity(conversions as usize);
        for i in 0..conversions {
            if let Ok(ClickOutcome::Tracked { click_id, .. }) = engine.click(click(i)).await {
                ids.push(click_id);
            }
        }
        // The click IDs stay alive until after the last reading: freed, their memory
        // would be reused by the conversions and hide part of their growth.
        let ids = Arc::new(ids);
        let recorded = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let before = rss_anon_bytes();
        let (writer, counter, targets) = (engine.clone(), Arc::clone(&recorded), Arc::clone(&ids));
        let elapsed = drive(targets.len() as u64, MEMORY_CONCURRENCY, move |i| {
            let engine = writer.clone();
            let recorded = Arc::clone(&counter);
            let mut req = conversion(PixelType::S2s, "sale".into());
            req.click_id = Some(targets[i as usize].clone());
            async move {
                if engine.convert(req).await.status == OutcomeStatus::Approved {
                    recorded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
        .await;
        let after = rss_anon_bytes();
        let recorded = recorded.load(std::sync::atomic::Ordering::Relaxed);
        println!("memory_per_conversion");
        println!(
            "  conversions recorded: {recorded} of {} in {:.1} s ({:.0} conversions/s)",
            ids.len(),
            elapsed.as_secs_f64(),
            recorded as f64 / elapsed.as_secs_f64()
        );
        println!(
            "  anonymous RSS growth over the clicks: {} bytes = {:.1} bytes/conversion",
            after.saturating_sub(before),
            after.saturating_sub(before) as f64 / recorded.max(1) as f64
        );
        assert_eq!(
            recorded,
            ids.len() as u64,
            "every click converts once, approved"
        );
        engine.shutdown().await;
    });
}

/// Set (to the conversion count) in the environment of the child process the conversion
/// memory step runs in: the child runs that step alone, in a fresh heap.
const MEMORY_CONVERSION_CHILD: &str = "CLICKTRAIL_BENCH_MEMORY_CONVERSIONS";

/// Runs [`memory_per_conversion`] in a child process (this binary again), its output
/// passed through.
fn memory_per_conversion_in_child(conversions: u64, smoke: bool) {
    let exe = std::env::current_exe().expect("the bench's own path");
    let mut child = std::process::Command::new(exe);
    child.env(MEMORY_CONVERSION_CHILD, conversions.to_string());
    if !smoke {
        child.arg("--bench");
    }
    let status = child.status().expect("the memory step's process starts");
    assert!(
        status.success(),
        "the conversion memory step failed: {status}"
    );
}

/// The criterion benches; `smoke` shrinks their fixtures and `wants` says whether a bench
/// ID passes the filter (fixtures nobody measures are not built).
fn benches(c: &mut Criterion, smoke: bool, wants: impl Fn(&str) -> bool) {
    let runtime = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = runtime
        .block_on(async { Engine::open(config(dir.path(), 1), Arc::new(SystemClock)) })
        .expect("engine");

    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.bench_function("click_ingest_one_shard", |b| {
        b.iter_custom(|iters| {
            let engine = engine.clone();
            runtime.block_on(drive(iters, CONCURRENCY, move |i| {
                let engine = engine.clone();
                async move {
                    let _ = engine.click(click(i)).await;
                }
            }))
        })
    });
    // The shard's own apply path: clicks handed over in batches of BATCH (one mailbox
    // hand-off and one reply per batch), so the figure is the shard's work (decide,
    // encode, append, index, count) plus minting and fingerprinting, comparable with the
    // 1 M clicks/s target. Requests are built outside the timed part.
    // Besides wall time, the process CPU time of the timed parts (summed over every call,
    // warm-up included) is printed per click: on this shared machine it moves far less with
    // other load than the wall figure.
    let (mut cpu_ms, mut cpu_clicks) = (0u64, 0u64);
    group.bench_function("click_ingest_one_shard_batched", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let n = BATCH.min(iters - done);
                let requests: Vec<ClickRequest> = (done..done + n).map(click).collect();
                let cpu_before = process_cpu_ms();
                let start = Instant::now();
                runtime.block_on(engine.click_batch(requests));
                elapsed += start.elapsed();
                cpu_ms += process_cpu_ms() - cpu_before;
                done += n;
            }
            cpu_clicks += iters;
            elapsed
        })
    });
    if cpu_ms > 0 {
        println!(
            "click_ingest_one_shard_batched: {:.0} clicks per CPU second ({cpu_clicks} clicks, {cpu_ms} ms of process CPU time)",
            cpu_clicks as f64 * 1000.0 / cpu_ms as f64
        );
    }

    // Conversions need clicks to convert against: visitors 0..visitors, one click each.
    let visitors = if smoke {
        SMOKE_CLICKS
    } else {
        CONVERSION_CLICKS
    };
    let converting =
        wants("engine/conversion_by_click_id") || wants("engine/conversion_by_fingerprint");
    let visitors = if converting { visitors } else { 1 };
    let ids: Vec<String> = runtime.block_on(async {
        let mut ids = Vec::new();
        for i in 0..visitors {
            if let Ok(ClickOutcome::Tracked { click_id, .. }) = engine.click(click(i)).await {
                ids.push(click_id);
            }
        }
        ids
    });
    // The fingerprint bench must measure attribution, not refusals: its first conversion
    // has to land on visitor 0's latest click by IP backup.
    let first = runtime.block_on(engine.convert(fingerprint_conversion(0, "check".into())));
    assert_eq!(
        (first.status, first.click_id.as_ref()),
        (OutcomeStatus::Approved, ids.first()),
        "a fingerprint conversion is attributed to the visitor's latest click: {first:?}"
    );
    let ids = Arc::new(ids);
    group.bench_function("conversion_by_click_id", |b| {
        b.iter_custom(|iters| {
            let engine = engine.clone();
            let ids = Arc::clone(&ids);
            runtime.block_on(drive(iters, CONCURRENCY, move |i| {
                let engine = engine.clone();
                let mut req = conversion(PixelType::S2s, format!("e{i}"));
                req.click_id = Some(ids[(i as usize) % ids.len()].clone());
                async move {
                    let _ = engine.convert(req).await;
                }
            }))
        })
    });
    // Events are numbered per iteration: a click converts once per event (SPEC 2.3), so
    // each conversion is a new one, attributed and recorded, never a duplicate.
    group.bench_function("conversion_by_fingerprint", |b| {
        b.iter_custom(|iters| {
            let engine = engine.clone();
            runtime.block_on(drive(iters, CONCURRENCY, move |i| {
                let engine = engine.clone();
                let req = fingerprint_conversion(i % visitors, format!("f{i}"));
                async move {
                    let _ = engine.convert(req).await;
                }
            }))
        })
    });
    group.finish();
    runtime.block_on(engine.shutdown());
    drop(engine);

    if !wants("engine_recovery/reopen_200k_records") {
        return;
    }
    // Recovery: a fresh log of exactly `records` clicks, reopened (every record replayed:
    // snapshots are off), reported as records per second.
    let records = if smoke {
        SMOKE_CLICKS
    } else {
        RECOVERY_RECORDS
    };
    let recovery_dir = tempfile::tempdir().expect("tempdir");
    let recovery_config = || {
        let mut c = config(recovery_dir.path(), 1);
        c.storage.snapshot_every_records = u64::MAX;
        c
    };
    runtime.block_on(async {
        let e = Engine::open(recovery_config(), Arc::new(SystemClock)).expect("engine");
        let writer = e.clone();
        drive(records, CONCURRENCY, move |i| {
            let engine = writer.clone();
            async move {
                let _ = engine.click(click(i)).await;
            }
        })
        .await;
        e.shutdown().await;
    });
    let mut group = c.benchmark_group("engine_recovery");
    group.sample_size(10);
    group.throughput(Throughput::Elements(records));
    group.bench_function("reopen_200k_records", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let e = Engine::open(recovery_config(), Arc::new(SystemClock)).expect("reopen");
                e.shutdown().await;
            })
        })
    });
    group.finish();
}

/// The criterion bench IDs (group/name), for skipping what the filter leaves out.
const CRITERION_BENCHES: [&str; 5] = [
    "engine/click_ingest_one_shard",
    "engine/click_ingest_one_shard_batched",
    "engine/conversion_by_click_id",
    "engine/conversion_by_fingerprint",
    "engine_recovery/reopen_200k_records",
];

fn main() {
    if let Some(conversions) = std::env::var(MEMORY_CONVERSION_CHILD)
        .ok()
        .and_then(|s| s.parse().ok())
    {
        memory_per_conversion(conversions);
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; any other run (`cargo test --benches`) is a smoke run.
    let smoke = !args.iter().any(|a| a == "--bench");
    // Criterion's filter is its first positional argument; the memory step runs without
    // one or when its name contains it.
    // (A plain substring here; criterion's own filter decides what it runs.)
    let filter = args.iter().find(|a| !a.starts_with('-'));
    let wants = |id: &str| filter.is_none_or(|f| id.contains(f.as_str()));
    if wants("memory_per_click") {
        let clicks = std::env::var("CLICKS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(if smoke { SMOKE_CLICKS } else { MEMORY_CLICKS });
        memory_per_click(clicks);
    }
    if wants("memory_per_conversion") {
        let conversions = std::env::var("CONVERSIONS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(if smoke {
                SMOKE_CLICKS
            } else {
                MEMORY_CONVERSIONS
            });
        memory_per_conversion_in_child(conversions, smoke);
    }
    if !CRITERION_BENCHES.iter().any(|id| wants(id)) {
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion, smoke, wants);
    criterion.final_summary();
}
