//! clicktrail's tracking engine: sharded actors own clicks, fingerprints, conversions and
//! real-time stats, and persist through the `wal` crate; the dispatcher fans conversions
//! out to affiliate pixels and webhooks. The engine knows nothing of HTTP parsing: the
//! server hands it [`api`] requests and turns the outcomes into answers.
//!
//! # Design
//!
//! **Shards.** `storage.shards` actors, each a task on the caller's tokio runtime with a
//! bounded mailbox (`send().await` is the back-pressure), each owning one log
//! (`data_dir/shard-NNN/`) and a slice of the state: clicks (fixed-size records in chunks,
//! sub IDs and extras interned), the click-ID and fingerprint indexes, impressions'
//! uniqueness index, conversions with their deliveries, and stats counters. A batch of
//! commands is applied and handed to the shard's syncer thread, which syncs it (group
//! commit: whatever queued during one sync joins the next) and only then has it answered:
//! nothing is acknowledged before it is durable under `sync = always`. A failed sync
//! poisons the shard (clicks untracked, conversions 503, health not ready with the reason,
//! logged once).
//!
//! **Routing.** IDs carry a 16-bit route key; the owner is `route_key % shard_count`, for
//! any count, so nothing needs a lookup table ([`ids`]). A click's route key is the top of
//! the visitor's fingerprint, so its clicks and fingerprint index live together; a
//! conversion takes its click's key (or a hash of campaign and affiliate when it has no
//! click), so a click is redeemed on one shard, serialised: exactly once per event under
//! concurrent posts. A delivery's ID is `<conversion id>.<seq>`.
//!
//! **Attribution** walks SPEC 2.3's order in [`Engine::convert`], asking the owning shard of
//! each candidate (click ID, cookies, fingerprint, AFID pair); the first shard that matches
//! decides and records. Merchant-reference dedupe is global (a `DashMap` reservation made by
//! the recording shard, released if its write fails).
//!
//! **Catalog.** Campaigns, affiliates and webhooks live in `DashMap`s read by every shard,
//! persisted in the control log (`data_dir/control/`) with the fingerprint key. A config
//! file entry is applied at start-up only when the file's version of it changed since the
//! last start, so admin changes survive restarts and edited file entries win once.
//!
//! **Deliveries** (durable outbox) are computed when a counted conversion is recorded (or
//! its status changes) and written in the same WAL record; they are handed to the
//! [`dispatcher::Dispatcher`] after the commit, every `AttemptReport` is routed back to the
//! owning shard and appended, and pending deliveries are resubmitted after recovery.
//!
//! **Snapshots** are written per shard every `storage.snapshot_every_records` records (or
//! every as many records as the shard holds items, when that is more); they drop clicks
//! past the longest cookie life and settled conversions past 90 days, and let the log
//! delete old segments.
//! **Resharding** at start-up re-routes every record to the new shard count with a
//! crash-safe protocol ([`layout`]).
//!
//! **Bytes on disk** are encoded in one module ([`codec`], bincode 2, versioned by record
//! kind and snapshot format byte). **Money** is integer micro-units inside, `f64` at the
//! API. **Time** comes from a [`Clock`].

pub mod api;
pub mod background;
mod catalog;
pub mod clock;
pub mod codec;
pub mod config;
mod delivery;
pub mod dispatcher;
pub mod fields;
pub mod fingerprint;
pub mod ids;
pub mod inspect;
pub mod layout;
mod meters;
pub mod money;
mod recovery;
mod shard;
pub mod stats;
pub mod template;
#[cfg(test)]
mod test_seed;
pub mod view;

pub use api::*;
pub use clock::{Clock, Day, ManualClock, SystemClock};
pub use config::*;
pub use view::*;

use crate::catalog::{Catalog, ControlLog};
use crate::codec::{CatalogKind, ClickRec, ImpressionRec};
use crate::dispatcher::Dispatcher;
use crate::fingerprint::FingerprintKey;
use crate::ids::{pair_route_key, shard_of, DeliveryId, Id};
use crate::shard::{Cmd, ConvInput, ConvReply, ConversionFilter, How, ShardActor, Shared};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

pub use crate::catalog::{
    MAX_CATALOG_ENTRIES, MAX_COOKIE_LIFE_DAYS, MAX_PIXELS_PER_AFFILIATE, MAX_WEBHOOKS,
};

/// Everything the engine needs to start: storage, dispatch, and the catalog seeded from
/// the config file.
#[derive(Clone, Debug, Default)]
pub struct EngineConfig {
    pub storage: StorageConfig,
    pub dispatch: DispatchConfig,
    pub campaigns: Vec<Campaign>,
    pub affiliates: Vec<Affiliate>,
    pub webhooks: Vec<Webhook>,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Wal(#[from] wal::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Readiness as `/readyz` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Recovered and able to persist.
    pub ready: bool,
    /// Why not, when not.
    pub fault: Option<String>,
}

/// Clicks per command in [`Engine::click_batch`]: big enough that the hand-off is noise,
/// small enough that the shard starts on the first chunk while the rest is minted.
const CLICK_BATCH_CHUNK: usize = 256;
/// How long shutdown waits for the last attempt reports to reach their shards.
const ROUTER_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Default page size of `conversions` and `deliveries`.
pub const DEFAULT_PAGE: usize = 100;
/// Largest page of `conversions` and `deliveries`: bounds one answer's memory.
pub const MAX_PAGE: usize = 1000;
/// Cookies looked at per conversion: a browser sends one per campaign it clicked, and a
/// forged request must not make the engine visit every shard many times.
pub const MAX_COOKIES: usize = 16;

/// A cheap-to-clone handle to the running engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Arc<Vec<mpsc::Sender<Cmd>>>,
    shared: Arc<Shared>,
    control: Arc<Mutex<ControlLog>>,
    dispatcher: Dispatcher,
    key: FingerprintKey,
    /// Looked up at first use (see `meters`).
    meters: std::sync::OnceLock<meters::Meters>,
    /// The shard actors, for taking them back on drop (their tasks hold the other handle).
    slots: Vec<shard::ShardSlot>,
    /// The attempt-report router; shutdown waits for it to drain.
    router: Mutex<Option<tokio::task::JoinHandle<()>>>,
    shut_down: std::sync::atomic::AtomicBool,
}

impl Drop for Inner {
    /// Dropping the last handle without `shutdown` is a crash as far as the logs are
    /// concerned (no final sync); the actors are taken out of their slots (waiting for a
    /// batch in progress) and dropped, closing their logs, so the data directory can be
    /// reopened at once. Their tasks find the slots empty and end.
    fn drop(&mut self) {
        self.shards = Arc::new(Vec::new());
        for slot in &self.slots {
            let actor = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            drop(actor);
        }
    }
}

fn wal_options(storage: &StorageConfig) -> wal::Options {
    wal::Options {
        segment_size_bytes: storage.segment_size_bytes,
        sync: match storage.sync {
            SyncMode::Always => wal::SyncPolicy::Always,
            SyncMode::Interval => wal::SyncPolicy::Interval(std::time::Duration::from_millis(
                storage.sync_interval_ms,
            )),
            SyncMode::Never => wal::SyncPolicy::Never,
        },
        recovery: recovery_mode(storage),
        ..wal::Options::default()
    }
}

/// Strict unless the operator asked to repair: then damaged records are dropped (and each
/// dropped range logged by `layout::open_log`) instead of refusing to start.
fn recovery_mode(storage: &StorageConfig) -> wal::RecoveryMode {
    if storage.repair {
        wal::RecoveryMode::Lossy
    } else {
        wal::RecoveryMode::Strict
    }
}

/// Cuts a value to [`MAX_VALUE_BYTES`] at a character boundary. The server refuses longer
/// values already; the engine does not trust that.
fn bound(value: &mut String) {
    if value.len() > MAX_VALUE_BYTES {
        let mut end = MAX_VALUE_BYTES;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
    }
}

/// Bounds a source in place (sub IDs, extras, each value): nothing is copied.
fn bound_source(mut source: Source) -> Source {
    source.sub_ids.truncate(MAX_SUB_IDS);
    source.sub_ids.iter_mut().for_each(bound);
    while source.sub_ids.last().is_some_and(|s| s.is_empty()) {
        source.sub_ids.pop();
    }
    source.extras.truncate(MAX_EXTRAS);
    for (name, value) in &mut source.extras {
        bound(name);
        bound(value);
    }
    source
}

/// Characters left as they are in query values (RFC 3986 unreserved).
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Appends `name=value` pairs to a URL's query, before any fragment.
fn append_query(url: &mut String, pairs: &[(String, String)]) {
    if pairs.is_empty() {
        return;
    }
    let fragment = match url.find('#') {
        Some(i) => url.split_off(i),
        None => String::new(),
    };
    let base = url.as_str();
    let mut sep = if base.contains('?') { '&' } else { '?' };
    if base.ends_with('?') || base.ends_with('&') {
        sep = '\0';
    }
    for (k, v) in pairs {
        if sep != '\0' {
            url.push(sep);
        }
        sep = '&';
        url.extend(percent_encoding::utf8_percent_encode(k, QUERY_VALUE));
        url.push('=');
        url.extend(percent_encoding::utf8_percent_encode(v, QUERY_VALUE));
    }
    url.push_str(&fragment);
}

/// The landing URL of a click (SPEC 2.1 step 4), and the click ID's text back (the caller
/// answers it too, so it is formatted once).
///
/// Expanded into a per-thread scratch buffer and returned as a copy of exactly its length:
/// the server hands the `String` to `bytes::Bytes`, which takes a buffer whose capacity
/// equals its length as it is but allocates a second, shared header for any other.
fn landing_url(
    campaign: &Campaign,
    click_id: Option<String>,
    source: &Source,
    now_ms: u64,
) -> (String, Option<String>) {
    thread_local! {
        static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    let no_extras: &[(String, String)] = &[];
    let extras = if campaign.propagate_extras {
        source.extras.as_slice()
    } else {
        no_extras
    };
    let mut macros = delivery::MacroValues {
        click_id: Some(click_id.unwrap_or_default()),
        conversion_id: None,
        campaign_id: campaign.id,
        affiliate_id: source.affiliate_id,
        creative_id: source.creative_id,
        sub_ids: &source.sub_ids,
        extras,
        conversion: None,
        status: None,
        timestamp_ms: now_ms,
    };
    let url = SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => {
            scratch.clear();
            template::expand_url_into(&mut scratch, &campaign.landing_url, &macros);
            append_query(&mut scratch, extras);
            let url = scratch.as_str().to_owned();
            // A pathological template must not pin a large buffer to the thread.
            if scratch.capacity() > MAX_SCRATCH_BYTES {
                *scratch = String::new();
            }
            url
        }
        // Not reached (nothing here re-enters), but a fresh buffer is always correct.
        Err(_) => {
            let mut url = template::expand_url(&campaign.landing_url, &macros);
            append_query(&mut url, extras);
            url
        }
    });
    (url, macros.click_id.take().filter(|id| !id.is_empty()))
}

/// The largest landing URL scratch buffer a thread keeps between clicks; a URL template
/// is bounded by the catalog, and typical landing URLs are well under 1 KiB.
const MAX_SCRATCH_BYTES: usize = 16 * 1024;

fn admin_invalid(field: &str, reason: impl Into<String>) -> AdminError {
    AdminError::Invalid {
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn unavailable() -> AdminError {
    AdminError::Unavailable("the engine is shutting down".into())
}

impl Engine {
    /// Recovers the data directory (snapshot + replay), applies the config file's catalog,
    /// starts the shard actors and the dispatcher. Blocking; call before serving, from
    /// within a tokio runtime (the dispatcher and the attempt-report router run on it).
    pub fn open(config: EngineConfig, clock: Arc<dyn Clock>) -> Result<Engine, Error> {
        Self::open_with(config, clock, dispatcher::DispatchOptions::default())
    }

    /// [`Engine::open`] with explicit dispatcher options (short retry schedules in tests).
    pub fn open_with(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        dispatch_options: dispatcher::DispatchOptions,
    ) -> Result<Engine, Error> {
        Self::open_on(config, clock, dispatch_options, layout::real_files())
    }

    /// [`Engine::open_with`] on any storage for the logs (tests inject disk faults with the
    /// wal crate's simulated disk).
    pub fn open_on(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        dispatch_options: dispatcher::DispatchOptions,
        log_storage: layout::StorageFactory,
    ) -> Result<Engine, Error> {
        let started = std::time::Instant::now();
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Config("Engine::open must run within a tokio runtime".into()))?;
        let storage = &config.storage;
        let shard_count = match storage.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        if shard_count > layout::MAX_SHARDS {
            return Err(Error::Config(format!(
                "storage.shards: at most {}",
                layout::MAX_SHARDS
            )));
        }
        if storage.segment_size_bytes < MIN_SEGMENT_BYTES {
            return Err(Error::Config(format!(
                "storage.segment_size_bytes: at least {MIN_SEGMENT_BYTES}"
            )));
        }
        if storage.sync == SyncMode::Interval && storage.sync_interval_ms == 0 {
            return Err(Error::Config(
                "storage.sync_interval_ms: must be positive".into(),
            ));
        }
        let data_dir = storage.data_dir.clone();
        layout::ensure_data_dir(&data_dir)?;
        let catalog = Arc::new(Catalog::default());
        let mut control = ControlLog::open(
            &log_storage,
            &layout::control_dir(&data_dir),
            &catalog,
            recovery_mode(storage),
        )?;
        control.seed(
            &catalog,
            &config.campaigns,
            &config.affiliates,
            &config.webhooks,
        )?;
        if let Some(n) = control.reshard.unfinished() {
            layout::finish_reshard(&data_dir, n as usize)?;
            control.mark_reshard(codec::ControlRecord::ReshardDone { shards: n })?;
        }
        let options = wal_options(storage);
        let existing = layout::existing_shards(&data_dir)?;
        if existing != 0 && existing != shard_count {
            recovery::reshard(
                &data_dir,
                existing,
                shard_count,
                &options,
                &mut control,
                &log_storage,
            )?;
        } else {
            layout::clear_staging(&data_dir)?;
        }
        let mut opened = Vec::with_capacity(shard_count);
        let mut records = 0u64;
        for i in 0..shard_count {
            let (wal, state, report) = recovery::open_shard(&data_dir, i, &options, &log_storage)?;
            records += report.records;
            if report.torn_tail_bytes > 0 {
                tracing::warn!(
                    shard = i,
                    bytes = report.torn_tail_bytes,
                    "torn tail truncated"
                );
            }
            opened.push((wal, state));
        }
        let merchant_refs = dashmap::DashMap::new();
        let horizon = clock.now_ms().saturating_sub(shard::MERCHANT_REF_WINDOW_MS);
        for (_, state) in &opened {
            for c in &state.conversions {
                if let (Some(r), None) = (&c.merchant_ref, c.duplicate_of) {
                    if c.time_ms >= horizon {
                        merchant_refs.insert((c.campaign_id, r.to_string()), (Id(c.id), c.time_ms));
                    }
                }
            }
        }
        let key = control.key;
        let shared = Arc::new(Shared {
            catalog,
            merchant_refs,
            clock: Arc::clone(&clock),
            health: shard::HealthState::default(),
        });
        let (report_tx, mut report_rx) = mpsc::unbounded_channel();
        let dispatcher = {
            let _guard = runtime.enter();
            Dispatcher::spawn_with(
                config.dispatch.clone(),
                dispatch_options,
                Arc::clone(&clock),
                report_tx,
            )
        };
        let mut senders = Vec::with_capacity(shard_count);
        let mut slots = Vec::with_capacity(shard_count);
        for (i, (wal, state)) in opened.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel(shard::MAILBOX_CAPACITY);
            let actor = ShardActor::new(
                shard::ShardSettings {
                    index: i,
                    snapshot_every_records: storage.snapshot_every_records.max(1),
                    compaction_catch_up_records: storage.compaction_catch_up_records.max(1),
                },
                state,
                wal,
                Arc::clone(&shared),
                dispatcher.clone(),
            )
            .map_err(|e| Error::Io {
                path: layout::shard_dir(&data_dir, i),
                source: e,
            })?;
            let slot: shard::ShardSlot = Arc::new(Mutex::new(Some(actor)));
            runtime.spawn(ShardActor::run(Arc::clone(&slot), rx));
            let _ = tx.try_send(Cmd::ResumeDeliveries);
            senders.push(tx);
            slots.push(slot);
        }
        let shards = Arc::new(senders);
        // Routes each attempt report to the shard that owns the delivery, which persists it.
        let weak = Arc::downgrade(&shards);
        let router = runtime.spawn(async move {
            while let Some(report) = report_rx.recv().await {
                let Some(shards) = weak.upgrade() else { break };
                let Some(id) = DeliveryId::parse(&report.delivery_id) else {
                    continue;
                };
                let tx = shards[id.conversion.shard(shards.len())].clone();
                drop(shards);
                let _ = tx.send(Cmd::Attempt(report)).await;
            }
        });
        shared.health.set_ready(true);
        let elapsed = started.elapsed();
        metrics::gauge!("clicktrail_recovery_seconds").set(elapsed.as_secs_f64());
        metrics::gauge!("clicktrail_recovered_records").set(records as f64);
        tracing::info!(
            shards = shard_count,
            records,
            ms = elapsed.as_millis() as u64,
            "engine recovered"
        );
        Ok(Engine {
            inner: Arc::new(Inner {
                shards,
                shared,
                control: Arc::new(Mutex::new(control)),
                dispatcher,
                key,
                slots,
                meters: std::sync::OnceLock::new(),
                router: Mutex::new(Some(router)),
                shut_down: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    fn meters(&self) -> &meters::Meters {
        self.inner.meters.get_or_init(meters::Meters::new)
    }

    fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    fn now_ms(&self) -> u64 {
        self.inner.shared.clock.now_ms()
    }

    /// Sends a command to a shard; the receiver of its answer, `None` when the shard is
    /// gone.
    async fn send<T>(
        &self,
        shard: usize,
        make: impl FnOnce(oneshot::Sender<T>) -> Cmd,
    ) -> Option<oneshot::Receiver<T>> {
        let (tx, rx) = oneshot::channel();
        let sender = self.inner.shards.get(shard)?;
        sender.send(make(tx)).await.ok()?;
        Some(rx)
    }

    /// Sends a command to a shard and awaits its answer; `None` when the shard is gone.
    async fn ask<T>(
        &self,
        shard: usize,
        make: impl FnOnce(oneshot::Sender<T>) -> Cmd,
    ) -> Option<T> {
        self.send(shard, make).await?.await.ok()
    }

    /// Asks every shard and collects the answers.
    async fn ask_all<T>(
        &self,
        make: impl Fn(oneshot::Sender<T>) -> Cmd,
    ) -> Result<Vec<T>, AdminError> {
        let mut pending = Vec::with_capacity(self.shard_count());
        for sender in self.inner.shards.iter() {
            let (tx, rx) = oneshot::channel();
            sender.send(make(tx)).await.map_err(|_| unavailable())?;
            pending.push(rx);
        }
        let mut out = Vec::with_capacity(pending.len());
        for rx in pending {
            out.push(rx.await.map_err(|_| unavailable())?);
        }
        Ok(out)
    }

    /// The campaign of a click or impression, checked against the catalog.
    fn check_source(&self, source: &Source) -> Result<Arc<Campaign>, Rejection> {
        let catalog = &self.inner.shared.catalog;
        let campaign = catalog
            .campaign(source.campaign_id)
            .ok_or(Rejection::UnknownCampaign)?;
        if campaign.status == CampaignStatus::Paused {
            return Err(Rejection::PausedCampaign);
        }
        let affiliate = catalog
            .affiliate_status(source.affiliate_id)
            .ok_or(Rejection::UnknownAffiliate)?;
        if affiliate == AffiliateStatus::Blocked {
            return Err(Rejection::BlockedAffiliate);
        }
        Ok(campaign)
    }

    // ---- tracking surface -------------------------------------------------------------

    /// Records a click (durably, per the sync policy) and returns where to send the visitor.
    pub async fn click(&self, request: ClickRequest) -> Result<ClickOutcome, Rejection> {
        let (campaign, source, now) = self.click_source(request.source)?;
        if !request.track {
            return Ok(ClickOutcome::Untracked {
                location: landing_url(&campaign, None, &source, now).0,
                degraded: false,
            });
        }
        let (shard, draft) = self
            .click_draft(
                &campaign,
                &source,
                &request.visitor,
                request.cookie_click_id.as_deref(),
                now,
            )
            .await;
        let id = Id(draft.rec.id);
        match self
            .ask(shard, |reply| Cmd::Click(Box::new(draft), reply))
            .await
        {
            Some(Ok(unique)) => {
                self.meters().click(unique);
                let (location, click_id) =
                    landing_url(&campaign, Some(id.to_string()), &source, now);
                Ok(ClickOutcome::Tracked {
                    click_id: click_id.unwrap_or_else(|| id.to_string()),
                    location,
                    cookie_life_secs: u64::from(campaign.cookie_life_days) * 86_400,
                    unique,
                })
            }
            _ => {
                self.meters().clicks_untracked.increment(1);
                Ok(ClickOutcome::Untracked {
                    location: landing_url(&campaign, None, &source, now).0,
                    degraded: true,
                })
            }
        }
    }

    /// Records many tracked clicks with one command per shard (one mailbox hand-off and
    /// one reply per shard instead of one per click), and returns how many were recorded
    /// durably (per the sync policy). Rejected requests and untracked ones are skipped.
    ///
    /// For bulk ingestion and for measuring a shard's own apply path without the per-call
    /// hand-off (`benches/engine.rs`): callers that need click IDs and landing URLs
    /// use [`Engine::click`].
    pub async fn click_batch(&self, requests: Vec<ClickRequest>) -> usize {
        let shards = self.shard_count();
        let mut per_shard: Vec<Vec<shard::ClickDraft>> = (0..shards).map(|_| Vec::new()).collect();
        let mut replies = Vec::new();
        for request in requests {
            let Ok((campaign, source, now)) = self.click_source(request.source) else {
                continue;
            };
            if !request.track {
                continue;
            }
            let (shard, draft) = self
                .click_draft(
                    &campaign,
                    &source,
                    &request.visitor,
                    request.cookie_click_id.as_deref(),
                    now,
                )
                .await;
            per_shard[shard].push(draft);
            // Hand over a chunk as soon as it fills, so the shard applies it while the
            // next one is being minted (the answers are awaited at the end).
            if per_shard[shard].len() >= CLICK_BATCH_CHUNK {
                let chunk = std::mem::take(&mut per_shard[shard]);
                replies.extend(self.send(shard, |reply| Cmd::Clicks(chunk, reply)).await);
            }
        }
        for (shard, chunk) in per_shard.into_iter().enumerate() {
            if !chunk.is_empty() {
                replies.extend(self.send(shard, |reply| Cmd::Clicks(chunk, reply)).await);
            }
        }
        let mut recorded = 0;
        for reply in replies {
            if let Ok(Ok(n)) = reply.await {
                recorded += n;
            }
        }
        recorded
    }

    /// A click's campaign (checked), its bounded source, and the time.
    fn click_source(&self, source: Source) -> Result<(Arc<Campaign>, Source, u64), Rejection> {
        let campaign = self.check_source(&source).inspect_err(|r| {
            metrics::counter!("clicktrail_clicks_rejected_total", "reason" => r.as_str())
                .increment(1);
        })?;
        Ok((campaign, bound_source(source), self.now_ms()))
    }

    /// Mints a click and routes it: its shard and what that shard needs to record it.
    async fn click_draft(
        &self,
        campaign: &Arc<Campaign>,
        source: &Source,
        visitor: &Visitor,
        cookie_click_id: Option<&str>,
        now: u64,
    ) -> (usize, shard::ClickDraft) {
        let n = self.shard_count();
        let fingerprint = self.inner.key.fingerprint(visitor);
        let id = Id::mint(fingerprint::route_key(fingerprint));
        let shard = id.shard(n);
        let window_ms = u64::from(campaign.unique_window_hours) * 3_600_000;
        let cookie = cookie_click_id.and_then(Id::parse);
        let (cookie_here, cookie_recent_elsewhere) = match cookie {
            Some(c) if c.shard(n) == shard => (Some(c), false),
            Some(c) => {
                let recent = self
                    .ask(c.shard(n), |reply| Cmd::RecentClick {
                        id: c,
                        campaign_id: campaign.id,
                        since_ms: now.saturating_sub(window_ms),
                        reply,
                    })
                    .await
                    .unwrap_or(false);
                (None, recent)
            }
            None => (None, false),
        };
        let rec = ClickRec {
            id: id.0,
            time_ms: now,
            campaign_id: campaign.id,
            affiliate_id: source.affiliate_id,
            creative_id: source.creative_id,
            sub_ids: source.sub_ids.clone(),
            extras: source.extras.clone(),
            ip: visitor.ip,
            fingerprint,
            unique: true,
        };
        let draft = shard::ClickDraft {
            rec,
            unique_window_ms: window_ms,
            cookie: cookie_here,
            cookie_recent_elsewhere,
        };
        (shard, draft)
    }

    /// Counts an impression. Errors are reasons for metrics; the caller still answers a gif.
    pub async fn impression(&self, request: ImpressionRequest) -> Result<(), Rejection> {
        let campaign = self.check_source(&request.source).inspect_err(|r| {
            metrics::counter!("clicktrail_impressions_rejected_total", "reason" => r.as_str())
                .increment(1);
        })?;
        let source = bound_source(request.source);
        let fingerprint = self.inner.key.fingerprint(&request.visitor);
        let rec = ImpressionRec {
            time_ms: self.now_ms(),
            campaign_id: campaign.id,
            affiliate_id: source.affiliate_id,
            creative_id: source.creative_id,
            // Moved out, not copied: the source is not needed after this.
            sid1: source.sub_ids.into_iter().next().unwrap_or_default(),
            fingerprint,
            unique: true,
        };
        let shard = shard_of(fingerprint::route_key(fingerprint), self.shard_count());
        let window_ms = u64::from(campaign.unique_window_hours) * 3_600_000;
        match self
            .ask(shard, |reply| Cmd::Impression {
                rec,
                unique_window_ms: window_ms,
                reply,
            })
            .await
        {
            Some(Ok(())) => self.meters().impressions.increment(1),
            _ => self.meters().impressions_untracked.increment(1),
        }
        Ok(())
    }

    /// Attributes and records a conversion (SPEC 2.3) and queues its deliveries.
    pub async fn convert(&self, request: ConversionRequest) -> ConversionOutcome {
        let outcome = self.convert_inner(request).await;
        if outcome.status == OutcomeStatus::Unavailable {
            metrics::counter!("clicktrail_conversions_unavailable_total").increment(1);
        }
        outcome
    }

    async fn convert_inner(&self, mut req: ConversionRequest) -> ConversionOutcome {
        let invalid = |field: &str| ConversionOutcome::refused(OutcomeStatus::Invalid, field);
        // The request's own string when it needs no trimming (the usual case): no copy.
        let mut event = std::mem::take(&mut req.event);
        let trimmed = event.trim();
        if trimmed.is_empty() {
            event = "sale".to_string();
        } else if trimmed.len() != event.len() {
            event = trimmed.to_string();
        }
        if event.len() > MAX_VALUE_BYTES {
            return invalid("Event");
        }
        if req
            .merchant_ref
            .as_ref()
            .is_some_and(|r| r.len() > MAX_VALUE_BYTES)
        {
            return invalid("MerchantReferenceID");
        }
        let micros = |v: Option<f64>| v.map(money::to_micros);
        let payout = micros(req.payout_override);
        if payout == Some(None) {
            return invalid("AP");
        }
        let revenue = micros(req.revenue_override);
        if revenue == Some(None) {
            return invalid("mp");
        }
        let total = micros(req.total_sales);
        if total == Some(None) {
            return invalid("TotalSales");
        }
        if let Some(c) = &req.currency_override {
            if catalog::check_currency("Currency", c).is_err() {
                return invalid("Currency");
            }
        }
        let click_text = req.click_id.take().filter(|c| !c.is_empty());
        req.source = bound_source(std::mem::take(&mut req.source));
        let browser = req.pixel_type.is_browser();
        let cid = req.source.campaign_id;
        let afid = req.source.affiliate_id;
        let mut cookies: Vec<Id> = req
            .cookies
            .iter()
            .take(MAX_COOKIES)
            .filter(|(campaign, _)| cid == 0 || *campaign == cid)
            .filter_map(|(_, value)| Id::parse(value))
            .collect();
        cookies.dedup();
        let fingerprint = self.inner.key.fingerprint(&req.visitor);
        let n = self.shard_count();
        let input = Arc::new(ConvInput {
            req,
            event,
            payout_override_micros: payout.flatten(),
            revenue_override_micros: revenue.flatten(),
            total_sales_micros: total.flatten(),
            fingerprint,
        });
        let unavailable = ConversionOutcome::unavailable;
        let ask = |shard: usize, how: How| {
            let input = Arc::clone(&input);
            async move {
                self.ask(shard, |reply| Cmd::Convert(input, how, reply))
                    .await
            }
        };
        // 1. ClickID given: that click, or an answer about it.
        if let Some(text) = click_text {
            let Some(id) = Id::parse(&text) else {
                return ConversionOutcome::refused(OutcomeStatus::UnknownClick, "click_id");
            };
            return match ask(id.shard(n), How::ClickId(id)).await {
                Some(ConvReply::Done(o)) => o,
                Some(ConvReply::NoMatch(reason)) => {
                    ConversionOutcome::refused(OutcomeStatus::UnknownClick, reason)
                }
                None => unavailable(),
            };
        }
        let mut notes = Vec::new();
        if browser {
            // 2. The campaign's cookie.
            for id in cookies {
                match ask(id.shard(n), How::Cookie(id)).await {
                    Some(ConvReply::Done(o)) => return o,
                    Some(ConvReply::NoMatch(reason)) => notes.push(reason),
                    None => return unavailable(),
                }
            }
            // 3. IP backup.
            let backup = self
                .inner
                .shared
                .catalog
                .campaign(cid)
                .is_some_and(|c| c.ip_backup);
            if backup {
                let shard = shard_of(fingerprint::route_key(fingerprint), n);
                match ask(shard, How::IpBackup).await {
                    Some(ConvReply::Done(o)) => return o,
                    Some(ConvReply::NoMatch(reason)) => notes.push(reason),
                    None => return unavailable(),
                }
            }
        }
        // 4. AFID post, else 5. unattributed.
        let shard = shard_of(pair_route_key(cid, afid), n);
        let how = if cid != 0 && afid != 0 {
            How::Afid(notes)
        } else {
            How::Unattributed(notes)
        };
        match ask(shard, how).await {
            Some(ConvReply::Done(o)) => o,
            Some(ConvReply::NoMatch(reason)) => {
                ConversionOutcome::refused(OutcomeStatus::Invalid, reason)
            }
            None => unavailable(),
        }
    }

    // ---- catalog (admin) ---------------------------------------------------------------

    async fn control<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut ControlLog, &Catalog) -> Result<T, AdminError> + Send + 'static,
    ) -> Result<T, AdminError> {
        let control = Arc::clone(&self.inner.control);
        let shared = Arc::clone(&self.inner.shared);
        tokio::task::spawn_blocking(move || {
            let mut log = control.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut log, &shared.catalog)
        })
        .await
        .map_err(|e| AdminError::Unavailable(e.to_string()))?
    }

    async fn put_entry(&self, kind: CatalogKind, id: u32, json: String) -> Result<(), AdminError> {
        self.control(move |log, catalog| log.put(catalog, kind, id, json))
            .await
            .inspect_err(|e| {
                if let AdminError::Unavailable(reason) = e {
                    self.inner
                        .shared
                        .health
                        .fault(format!("control log: {reason}"));
                }
            })
    }

    pub fn campaigns(&self) -> Vec<Campaign> {
        self.inner.shared.catalog.campaigns()
    }
    pub fn campaign(&self, id: u32) -> Option<Campaign> {
        self.inner
            .shared
            .catalog
            .campaign(id)
            .map(|c| c.as_ref().clone())
    }
    /// Creates or replaces; durable before it returns; takes effect at once.
    pub async fn put_campaign(&self, mut campaign: Campaign) -> Result<Campaign, AdminError> {
        campaign.currency = campaign.currency.to_ascii_uppercase();
        catalog::validate_campaign(&campaign)?;
        let json = serde_json::to_string(&campaign)
            .map_err(|e| admin_invalid("campaign", e.to_string()))?;
        self.put_entry(CatalogKind::Campaign, campaign.id, json)
            .await?;
        Ok(campaign)
    }
    pub async fn delete_campaign(&self, id: u32) -> Result<(), AdminError> {
        self.control(move |log, catalog| log.delete(catalog, CatalogKind::Campaign, id))
            .await
    }
    pub fn affiliates(&self) -> Vec<Affiliate> {
        self.inner.shared.catalog.affiliates()
    }
    pub fn affiliate(&self, id: u32) -> Option<Affiliate> {
        self.inner
            .shared
            .catalog
            .affiliate(id)
            .map(|a| a.as_ref().clone())
    }
    pub async fn put_affiliate(&self, affiliate: Affiliate) -> Result<Affiliate, AdminError> {
        catalog::validate_affiliate(&affiliate)?;
        let json = serde_json::to_string(&affiliate)
            .map_err(|e| admin_invalid("affiliate", e.to_string()))?;
        self.put_entry(CatalogKind::Affiliate, affiliate.id, json)
            .await?;
        Ok(affiliate)
    }
    pub async fn delete_affiliate(&self, id: u32) -> Result<(), AdminError> {
        self.control(move |log, catalog| log.delete(catalog, CatalogKind::Affiliate, id))
            .await
    }
    pub fn webhooks(&self) -> Vec<Webhook> {
        self.inner.shared.catalog.webhooks()
    }
    pub fn webhook(&self, id: u32) -> Option<Webhook> {
        self.inner
            .shared
            .catalog
            .webhook(id)
            .map(|w| w.as_ref().clone())
    }
    pub async fn put_webhook(&self, webhook: Webhook) -> Result<Webhook, AdminError> {
        catalog::validate_webhook(&webhook)?;
        let json =
            serde_json::to_string(&webhook).map_err(|e| admin_invalid("webhook", e.to_string()))?;
        self.put_entry(CatalogKind::Webhook, webhook.id, json)
            .await?;
        Ok(webhook)
    }
    pub async fn delete_webhook(&self, id: u32) -> Result<(), AdminError> {
        self.control(move |log, catalog| log.delete(catalog, CatalogKind::Webhook, id))
            .await
    }

    // ---- records (admin) ---------------------------------------------------------------

    /// The click with its conversions and their audits; `None` for unknown or malformed IDs.
    pub async fn click_view(&self, click_id: &str) -> Option<ClickView> {
        let id = Id::parse(click_id)?;
        self.ask(id.shard(self.shard_count()), |reply| {
            Cmd::ClickView(id, reply)
        })
        .await
        .flatten()
    }

    pub async fn conversions(&self, query: ConversionQuery) -> Result<ConversionPage, AdminError> {
        let limit = match query.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let after =
            match &query.cursor {
                None => None,
                Some(text) => {
                    let parsed = text
                        .split_once('.')
                        .and_then(|(t, id)| Some((t.parse::<u64>().ok()?, Id::parse(id)?)));
                    Some(parsed.ok_or_else(|| {
                        admin_invalid("cursor", "not a cursor from a previous page")
                    })?)
                }
            };
        let from_ms = query.from.map_or(0, |d| d.start_ms());
        let to_ms = query.to.map_or(u64::MAX, |d| d.start_ms() + 86_400_000 - 1);
        if from_ms > to_ms {
            return Err(admin_invalid("from", "after to"));
        }
        let filter = ConversionFilter {
            from_ms,
            to_ms,
            campaign_id: query.campaign_id,
            affiliate_id: query.affiliate_id,
            status: query.status,
            after,
            limit: limit + 1,
        };
        let _turn = background::turn().await;
        let shards = self.ask_all(Cmd::Conversions).await?;
        let mut all: Vec<(u64, Id, ConversionView)> = background::run("conversions", move || {
            let mut all: Vec<_> = shards.iter().flat_map(|s| s.conversions(&filter)).collect();
            all.sort_by_key(|a| (a.0, a.1));
            all
        })
        .await
        .map_err(|e| AdminError::Unavailable(e.to_string()))?;
        let next_cursor = (all.len() > limit).then(|| {
            let (t, id, _) = &all[limit - 1];
            format!("{t}.{id}")
        });
        all.truncate(limit);
        Ok(ConversionPage {
            items: all.into_iter().map(|(_, _, v)| v).collect(),
            next_cursor,
        })
    }

    /// Changes a conversion's status durably and fires pixels set to fire on the new one.
    pub async fn set_conversion_status(
        &self,
        conversion_id: &str,
        status: ConversionStatus,
    ) -> Result<ConversionView, AdminError> {
        let id = Id::parse(conversion_id).ok_or(AdminError::NotFound)?;
        self.ask(id.shard(self.shard_count()), |reply| {
            Cmd::SetStatus(id, status, reply)
        })
        .await
        .ok_or_else(unavailable)?
    }

    pub async fn deliveries(
        &self,
        state: Option<DeliveryState>,
        limit: usize,
    ) -> Result<Vec<DeliveryView>, AdminError> {
        let limit = match limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let _turn = background::turn().await;
        let shards = self.ask_all(Cmd::Conversions).await?;
        background::run("deliveries", move || {
            let mut all: Vec<_> = shards
                .iter()
                .flat_map(|s| s.deliveries(state, limit))
                .collect();
            all.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
            all.truncate(limit);
            all.into_iter().map(|(_, v)| v).collect()
        })
        .await
        .map_err(|e| AdminError::Unavailable(e.to_string()))
    }

    /// Queues a new attempt of a delivery (any state), keeping its ID.
    pub async fn replay_delivery(&self, delivery_id: &str) -> Result<DeliveryView, AdminError> {
        let id = DeliveryId::parse(delivery_id).ok_or(AdminError::NotFound)?;
        self.ask(id.conversion.shard(self.shard_count()), |reply| {
            Cmd::Replay(id, reply)
        })
        .await
        .ok_or_else(unavailable)?
    }

    /// Real-time report: counters grouped by the query's keys, with SPEC 3's ratios.
    pub async fn report(&self, query: ReportQuery) -> Result<stats::Report, AdminError> {
        if query.from > query.to {
            return Err(admin_invalid("from", "after to"));
        }
        let mut group_by = Vec::new();
        for k in query.group_by {
            if !group_by.contains(&k) {
                group_by.push(k);
            }
        }
        let _turn = background::turn().await;
        let shards = self.ask_all(Cmd::Counters).await?;
        let (from, to) = (query.from, query.to);
        let too_many_rows = |e: stats::TooManyRows| admin_invalid("group_by", e.to_string());
        background::run("report", move || {
            let mut groups = Vec::with_capacity(shards.len());
            for shard in &shards {
                let grouped = shard.report(from.0, to.0, &group_by, stats::MAX_REPORT_ROWS);
                groups.push(grouped.ok_or(stats::TooManyRows)?);
            }
            stats::Report::build(from, to, group_by, groups.into_iter().flatten())
        })
        .await
        .map_err(|e| AdminError::Unavailable(e.to_string()))?
        .map_err(too_many_rows)
    }

    // ---- operations --------------------------------------------------------------------

    /// Clicks held in memory and the bytes of their store and indexes (click records,
    /// click-ID and fingerprint tables), summed over shards; for the memory figure.
    pub async fn click_memory(&self) -> (usize, usize) {
        self.ask_all(Cmd::Memory)
            .await
            .unwrap_or_default()
            .into_iter()
            .fold((0, 0), |(c, b), (c2, b2)| (c + c2, b + b2))
    }

    pub fn health(&self) -> Health {
        self.inner.shared.health.health()
    }

    /// Stops the actors after they finish queued work, and syncs every log.
    pub async fn shutdown(&self) {
        if self
            .inner
            .shut_down
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        self.inner.dispatcher.shutdown().await;
        // The dispatcher has stopped; once its last report sender is gone the router ends,
        // having handed every report to its shard. Bounded: a stuck sender must not stop
        // the logs from being synced (unpersisted attempts are simply retried after restart).
        let router = self
            .inner
            .router
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(router) = router {
            let _ = tokio::time::timeout(ROUTER_DRAIN_TIMEOUT, router).await;
        }
        let _ = self.ask_all(Cmd::Shutdown).await;
        let _ = self
            .control(|log, _| {
                log.sync()
                    .map_err(|e| AdminError::Unavailable(e.to_string()))
            })
            .await;
        self.inner.shared.health.set_ready(false);
    }
}
