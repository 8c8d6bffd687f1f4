//! When the log cannot persist (SPEC 6): clicks still redirect but untracked, conversions
//! answer 503, admin writes fail, health says why; nothing acknowledged before the fault is
//! lost. Faults are injected with the wal crate's simulated disk.

mod common;

use common::*;
use engine::*;
use std::sync::Arc;
use wal::storage::FaultPlan;

/// One simulated disk per log directory.
type Disks = engine::layout::SimulatedDisks;

/// An engine's data directory, config and clock, opened on any set of simulated disks
/// (the disks before and after a power loss).
struct Rig {
    _dir: tempfile::TempDir,
    config: EngineConfig,
    clock: Arc<ManualClock>,
}

impl Rig {
    fn new(shards: usize) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        Rig {
            config: config(dir.path(), shards),
            clock: Arc::new(ManualClock::new(T0_MS)),
            _dir: dir,
        }
    }

    fn open(&self, disks: &Disks) -> Engine {
        Engine::open_on(
            self.config.clone(),
            self.clock.clone(),
            engine::dispatcher::DispatchOptions::default(),
            disks.factory(),
        )
        .expect("engine opens")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_log_degrades_and_never_pretends() {
    let rig = Rig::new(2);
    let disks = Disks::default();
    let e = rig.open(&disks);
    assert!(e.health().ready);
    let before = click_id(&e, click_request(1, 7, 1)).await;
    let mut req = conversion(PixelType::S2s);
    req.click_id = Some(before.clone());
    let acked = e.convert(req).await;
    assert_eq!(acked.status, OutcomeStatus::Approved);

    // Every sync fails from now on (EIO): the logs are poisoned at their next commit.
    disks.set_faults(FaultPlan {
        eio_after_syncs: Some(0),
        ..FaultPlan::default()
    });
    for v in 0..8 {
        match e.click(click_request(1, 7, v)).await.expect("not rejected") {
            ClickOutcome::Untracked { location, degraded } => {
                assert!(degraded);
                assert!(
                    location.starts_with("https://shop.example/?ref=&a=7"),
                    "{location}"
                );
            }
            other => panic!("a click was acknowledged on a failing log: {other:?}"),
        }
    }
    for afid in [7, 8] {
        let mut post = conversion(PixelType::S2s);
        post.source = source(1, afid, "");
        let out = e.convert(post).await;
        assert_eq!(out.status, OutcomeStatus::Unavailable);
        assert_eq!(out.status.http_status(), 503);
    }
    let health = e.health();
    assert!(!health.ready);
    assert!(
        health.fault.as_deref().is_some_and(|f| f.contains("shard")),
        "{health:?}"
    );
    assert!(matches!(
        e.put_campaign(demo_campaign(5)).await,
        Err(AdminError::Unavailable(_))
    ));
    assert!(
        e.campaign(5).is_none(),
        "a change that is not durable is not visible"
    );
    drop(e);

    // Power loss, then recovery: everything acknowledged before the fault is there.
    let recovered = disks.crashed(7);
    let e = rig.open(&recovered);
    assert!(e.health().ready);
    let view = e
        .click_view(&before)
        .await
        .expect("acknowledged click survives");
    assert_eq!(view.conversions.len(), 1);
    assert_eq!(
        Some(&view.conversions[0].conversion_id),
        acked.conversion_id.as_ref()
    );
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(T0_MS));
    // Outside a tokio runtime.
    assert!(matches!(
        Engine::open(config(dir.path(), 1), clock.clone()),
        Err(engine::Error::Config(_))
    ));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = runtime.enter();
    type Tweak = Box<dyn Fn(&mut EngineConfig)>;
    let cases: Vec<(&str, Tweak)> = vec![
        ("too many shards", Box::new(|c| c.storage.shards = 100_000)),
        (
            "tiny segments",
            Box::new(|c| c.storage.segment_size_bytes = 4096),
        ),
        (
            "a file campaign with a bad landing URL",
            Box::new(|c| c.campaigns[0].landing_url = "ftp://x/".into()),
        ),
        (
            "a file webhook with a bad secret",
            Box::new(|c| {
                c.webhooks = vec![Webhook {
                    id: 1,
                    url: "https://hooks.example/x".into(),
                    secret: "nope".into(),
                    ..Webhook::default()
                }]
            }),
        ),
    ];
    for (what, tweak) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = config(dir.path(), 1);
        tweak(&mut c);
        match Engine::open(c, clock.clone()) {
            Err(engine::Error::Config(reason)) => assert!(!reason.is_empty(), "{what}"),
            Err(other) => panic!("{what}: unexpected error {other}"),
            Ok(_) => panic!("{what}: accepted"),
        }
    }
}

/// Group commit under load: many clicks in flight on two shards, so the syncer folds
/// batches together while the actors go on applying. Power is lost at a seeded moment
/// (every write after the last completed sync may vanish); after recovery every click that
/// was answered `Tracked` is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_clicks_survive_power_loss_under_load() {
    const SEEDS: u64 = 8;
    const CLICKS: u64 = 400;
    for seed in 0..SEEDS {
        println!("power loss seed {seed}");
        let rig = Rig::new(2);
        let disks = Disks::default();
        let e = rig.open(&disks);
        let mut set = tokio::task::JoinSet::new();
        for i in 0..CLICKS {
            let e = e.clone();
            set.spawn(async move {
                let mut req = click_request(1, 7, (i % 251) as u8);
                req.source.sub_ids = vec![format!("c{i}")];
                match e.click(req).await {
                    Ok(ClickOutcome::Tracked { click_id, .. }) => Some(click_id),
                    _ => None,
                }
            });
        }
        let mut acknowledged = Vec::new();
        while let Some(joined) = set.join_next().await {
            acknowledged.extend(joined.expect("click task"));
        }
        assert_eq!(
            acknowledged.len() as u64,
            CLICKS,
            "seed {seed}: all tracked"
        );
        drop(e);
        let recovered = disks.crashed(seed);
        let e = rig.open(&recovered);
        for id in &acknowledged {
            assert!(
                e.click_view(id).await.is_some(),
                "seed {seed}: acknowledged click {id} lost"
            );
        }
    }
}
