//! Shared harness for engine tests: a real engine on a temporary data directory with a
//! manual clock.

#![allow(dead_code)]

use engine::*;
use std::sync::Arc;

/// 2026-11-25 12:00:00 UTC: mid-day, so windows in tests never cross a day by accident.
pub const T0_MS: u64 = 1_795_608_000_000;
pub const HOUR_MS: u64 = 3_600_000;
pub const DAY_MS: u64 = 86_400_000;

pub fn demo_campaign(id: u32) -> Campaign {
    Campaign {
        id,
        name: format!("campaign {id}"),
        landing_url: "https://shop.example/?ref={click_id}&a={affiliate_id}&s={sid1}".into(),
        revenue: 10.0,
        payout: 4.0,
        ..Campaign::default()
    }
}

pub fn demo_affiliate(id: u32) -> Affiliate {
    Affiliate {
        id,
        name: format!("affiliate {id}"),
        ..Affiliate::default()
    }
}

pub fn config(dir: &std::path::Path, shards: usize) -> EngineConfig {
    EngineConfig {
        storage: StorageConfig {
            data_dir: dir.to_path_buf(),
            shards,
            sync: SyncMode::Always,
            segment_size_bytes: 2 << 20,
            ..StorageConfig::default()
        },
        dispatch: DispatchConfig {
            allow_private_targets: true,
            ..DispatchConfig::default()
        },
        campaigns: vec![demo_campaign(1), demo_campaign(2)],
        affiliates: vec![demo_affiliate(7), demo_affiliate(8)],
        webhooks: Vec::new(),
    }
}

pub struct Harness {
    engine: Option<Engine>,
    pub options: engine::dispatcher::DispatchOptions,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
    pub config: EngineConfig,
}

impl Harness {
    pub fn new(shards: usize, tweak: impl FnOnce(&mut EngineConfig)) -> Harness {
        Self::with_options(
            shards,
            tweak,
            engine::dispatcher::DispatchOptions::default(),
        )
    }

    pub fn with_options(
        shards: usize,
        tweak: impl FnOnce(&mut EngineConfig),
        options: engine::dispatcher::DispatchOptions,
    ) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = config(dir.path(), shards);
        tweak(&mut config);
        let clock = Arc::new(ManualClock::new(T0_MS));
        let engine = Engine::open_with(config.clone(), clock.clone(), options.clone())
            .expect("engine opens");
        Harness {
            engine: Some(engine),
            options,
            clock,
            dir,
            config,
        }
    }

    pub fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine is open")
    }

    /// Drops the engine without shutdown (a crash as far as the logs are concerned) and
    /// opens the same data directory again, with `shards` shards.
    pub fn crash_and_reopen(&mut self, shards: usize) {
        drop(self.engine.take());
        self.config.storage.shards = shards;
        self.engine = Some(
            Engine::open_with(
                self.config.clone(),
                self.clock.clone(),
                self.options.clone(),
            )
            .expect("engine reopens"),
        );
    }

    /// Shuts the engine down gracefully (every attempt report persisted, logs synced) and
    /// opens the same data directory again.
    pub async fn restart(&mut self) {
        self.engine().shutdown().await;
        self.crash_and_reopen(self.config.storage.shards);
    }
}

pub fn visitor(n: u8) -> Visitor {
    Visitor {
        ip: format!("203.0.113.{n}").parse().expect("ip"),
        user_agent: format!("Mozilla/5.0 test-{n}"),
        accept_language: "en-US".into(),
    }
}

pub fn source(campaign: u32, affiliate: u32, sid1: &str) -> Source {
    Source {
        campaign_id: campaign,
        affiliate_id: affiliate,
        creative_id: None,
        sub_ids: if sid1.is_empty() {
            vec![]
        } else {
            vec![sid1.to_string()]
        },
        extras: Vec::new(),
    }
}

pub fn click_request(campaign: u32, affiliate: u32, v: u8) -> ClickRequest {
    ClickRequest {
        source: source(campaign, affiliate, "s1"),
        visitor: visitor(v),
        cookie_click_id: None,
        track: true,
    }
}

pub fn conversion(pixel_type: PixelType) -> ConversionRequest {
    ConversionRequest {
        pixel_type,
        click_id: None,
        source: Source::default(),
        cookies: Vec::new(),
        visitor: visitor(200),
        event: String::new(),
        merchant_ref: None,
        payout_override: None,
        revenue_override: None,
        currency_override: None,
        total_sales: None,
        status: ConversionStatus::Approved,
        token: None,
    }
}

pub async fn click_id(engine: &Engine, req: ClickRequest) -> String {
    match engine.click(req).await.expect("click accepted") {
        ClickOutcome::Tracked { click_id, .. } => click_id,
        other => panic!("click not tracked: {other:?}"),
    }
}

/// The report's totals over every day, ungrouped.
pub async fn report_totals(engine: &Engine) -> serde_json::Value {
    engine
        .report(ReportQuery {
            from: Day(0),
            to: Day(40_000),
            group_by: vec![],
        })
        .await
        .expect("report")
        .totals
}
