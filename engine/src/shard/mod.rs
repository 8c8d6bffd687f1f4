//! Shard actors. Each shard is a task on the engine's tokio runtime that owns one
//! `wal::Wal` and a [`ShardState`] (behind [`ShardSlot`], so dropping the engine can take
//! them back at once) and serves commands from a bounded mailbox; a syncer thread per shard
//! ([`syncer`]) makes its log durable.
//!
//! Group commit: the actor takes a batch of commands (the first one, then whatever else is
//! already queued, up to [`MAX_BATCH`]), applies each (deciding, appending its WAL record,
//! then changing memory), and hands the batch's log range with its deferred answers to the
//! syncer, which answers them once one sync covers them. Under `sync = always` nothing is
//! acknowledged before it is durable. If a sync fails the log is poisoned: the waiting
//! answers say "unavailable", every later write too, and health reports the fault until a
//! restart recovers from disk. (Memory may then hold the failed batch's changes; they were
//! never acknowledged and are gone after the restart.)
//!
//! Why a task and not a thread: with the actor on a thread of its own, every command cost
//! a switch between the HTTP worker and that thread (about one per request, a third of a
//! click's CPU). As a task, a command is a wake-up on the same worker; only the syncs
//! leave it, one per group.

pub mod chunked;
mod chunked_map;
mod convert;
mod frozen;
mod index;
mod snapshot_writer;
pub mod state;
mod syncer;

pub use convert::{ConvInput, ConvReply, How};
pub use frozen::{FrozenConversions, FrozenCounters};

use crate::api::{AdminError, DeliveryState, OutcomeStatus};
use crate::catalog::Catalog;
use crate::codec::{self, ClickRec, ImpressionRec, MatchedBy, ShardRecord};
use crate::config::ConversionStatus;
use crate::dispatcher::{AttemptOutcome, AttemptReport, Dispatcher};
use crate::ids::{DeliveryId, Id};
use crate::view::{ClickView, ConversionView, DeliveryView};
use crate::Clock;
use dashmap::DashMap;
use state::ShardState;
use std::sync::{Arc, Mutex};
use syncer::{SyncJob, Syncer};
use tokio::sync::{mpsc, oneshot};

/// Commands per group commit at most: bounds the latency one batch adds to its first
/// command and the memory of deferred replies.
pub const MAX_BATCH: usize = 1024;
/// Mailbox capacity per shard: a full mailbox makes callers wait (back-pressure) instead of
/// growing memory.
pub const MAILBOX_CAPACITY: usize = 4096;
/// How long a merchant reference stays a duplicate (SPEC 2.3).
pub const MERCHANT_REF_WINDOW_MS: u64 = 90 * 86_400_000;
/// How long a settled conversion stays in memory (for the admin API: listing, status
/// changes, replays): the merchant-reference window, so a duplicate's original is always
/// there to point at. Older ones leave at the next snapshot unless their click is still
/// kept or a delivery is still pending; reports keep counting them (counters are apart).
pub const CONVERSION_RETENTION_MS: u64 = MERCHANT_REF_WINDOW_MS;

/// A snapshot also compacts the live state when at least one in this many of its clicks
/// and conversions is past its retention. Snapshots always leave such items out of the
/// file; shedding them from memory means rebuilding the whole state (on the snapshot's
/// thread, see [`ShardActor::reap_snapshot`]: seconds of CPU for tens of millions of
/// clicks, and for a while twice the memory), so it waits until it frees a worthwhile
/// share: with clicks kept 30 days, about every 4 days of traffic.
const COMPACT_WHEN_EXPIRED_ONE_IN: usize = 8;

/// Bytes of records (and their index) a compaction keeps while its snapshot is being built
/// and written, to replay them onto the compacted state. Past this the compaction is given
/// up (the next snapshot tries again) rather than hold ever more memory: 64 MiB is
/// hundreds of thousands of clicks, minutes of a busy shard's traffic, while a shard of ten
/// million clicks compacts in seconds.
const COMPACTION_REPLAY_MAX_BYTES: usize = 64 << 20;

/// Oldest click time and oldest settled-conversion time (ms) that a snapshot taken at
/// `now_ms` keeps: clicks within the longest cookie life, conversions within
/// [`CONVERSION_RETENTION_MS`].
fn retention_horizons(catalog: &Catalog, now_ms: u64) -> (u64, u64) {
    (
        now_ms.saturating_sub(catalog.max_cookie_life_ms()),
        now_ms.saturating_sub(CONVERSION_RETENTION_MS),
    )
}

/// What a snapshot taken at `now_ms` leaves out: clicks past the longest cookie life,
/// impression entries past their campaign's unique window, and conversions past
/// [`CONVERSION_RETENTION_MS`] unless their click stays (it is what makes a second
/// conversion of that click and event a duplicate) or a delivery of theirs is still being
/// retried.
fn retention(
    catalog: &Catalog,
    now_ms: u64,
) -> frozen::Retention<
    impl Fn(u32, u64) -> bool + '_,
    impl Fn(&crate::codec::ConversionRec, bool) -> bool,
> {
    let (keep_clicks_since_ms, keep_conversions_since) = retention_horizons(catalog, now_ms);
    frozen::Retention {
        keep_clicks_since_ms,
        keep_impression: move |campaign, t| {
            catalog.campaign(campaign).is_some_and(|c| {
                now_ms.saturating_sub(t) < u64::from(c.unique_window_hours) * 3_600_000
            })
        },
        keep_conversion: move |c: &crate::codec::ConversionRec, click_kept| {
            click_kept
                || c.time_ms >= keep_conversions_since
                || c.deliveries
                    .iter()
                    .any(|d| d.state == DeliveryState::Pending)
        },
    }
}

/// A compaction in flight: its snapshot's thread rebuilds the state, while the actor keeps
/// every record it appends meanwhile, to replay onto the rebuilt state before swapping it
/// in (see [`ShardActor::reap_snapshot`] and [`ShardActor::catch_up`]).
struct Compaction {
    /// The snapshot's retention horizons (clicks, conversions; ms), to count what the
    /// compacted state still holds past them (see [`ShardActor::expired_kept`]).
    horizons: (u64, u64),
    /// The records' encoded payloads, one after the other.
    bytes: Vec<u8>,
    /// Per record: its LSN, its kind and where its payload ends in `bytes`.
    records: Vec<KeptRecord>,
    /// The state its thread rebuilt, once done, catching up with `records`.
    rebuilt: Option<Rebuilt>,
}

/// A record kept for a compaction: its LSN, its kind and where its payload ends.
type KeptRecord = (wal::Lsn, u8, usize);

/// A compaction's rebuilt state, catching up with the records kept for it.
struct Rebuilt {
    state: ShardState,
    /// Kept records replayed onto `state` so far.
    replayed: usize,
    /// Kept records there were at the last catch-up step (see [`ShardActor::catch_up`]).
    seen: usize,
    /// What the snapshot held: the next snapshot is due as many records later.
    items_at_snapshot: usize,
    /// Items past retention it still holds (see [`ShardActor::expired_kept`]).
    expired_kept: usize,
    /// When the rebuilt state came back.
    since: std::time::Instant,
}

/// The kept records `range` of a compaction (see [`Compaction`]), as (LSN, kind, payload).
fn kept_records<'a>(
    bytes: &'a [u8],
    records: &'a [KeptRecord],
    range: std::ops::Range<usize>,
) -> impl Iterator<Item = (wal::Lsn, u8, &'a [u8])> + Clone {
    let first_start = range
        .start
        .checked_sub(1)
        .and_then(|i| records.get(i))
        .map_or(0, |&(_, _, end)| end);
    let records = records.get(range).unwrap_or(&[]);
    let starts = std::iter::once(first_start).chain(records.iter().map(|&(_, _, end)| end));
    records
        .iter()
        .zip(starts)
        .map(move |(&(lsn, kind, end), start)| (lsn, kind, bytes.get(start..end).unwrap_or(&[])))
}

/// Why a write was not acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable(pub String);

/// Readiness shared by every actor.
#[derive(Default)]
pub struct HealthState {
    faults: Mutex<Vec<String>>,
    ready: std::sync::atomic::AtomicBool,
}

impl HealthState {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, std::sync::atomic::Ordering::SeqCst);
    }
    /// Records a fault; logs it once per distinct reason.
    pub fn fault(&self, reason: String) {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        if !faults.contains(&reason) {
            tracing::error!(%reason, "storage fault: the log cannot persist");
            faults.push(reason);
        }
    }
    pub fn health(&self) -> crate::Health {
        let faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let ready = self.ready.load(std::sync::atomic::Ordering::SeqCst) && faults.is_empty();
        crate::Health {
            ready,
            fault: (!faults.is_empty()).then(|| faults.join("; ")),
        }
    }
}

/// What every shard shares.
pub struct Shared {
    pub catalog: Arc<Catalog>,
    /// (campaign, merchant reference) -> (conversion, time): the 90-day dedupe set,
    /// global because a campaign's conversions live on many shards. Entries are reserved
    /// by the shard that records the conversion and released if its write fails.
    pub merchant_refs: DashMap<(u32, String), (Id, u64)>,
    pub clock: Arc<dyn Clock>,
    pub health: HealthState,
}

/// A click ready for its shard (ID minted, campaign checked).
pub struct ClickDraft {
    pub rec: ClickRec,
    /// The campaign's unique window (a plain number rather than a handle on the campaign,
    /// whose shared count would bounce between the caller's and the shard's cores).
    pub unique_window_ms: u64,
    /// The visitor's cookie click for this campaign, when it lives on this shard.
    pub cookie: Option<Id>,
    /// The cookie click (on another shard) was recent: the click is not unique.
    pub cookie_recent_elsewhere: bool,
}

/// A conversion filter for `GET /conversions`.
#[derive(Clone, Debug, Default)]
pub struct ConversionFilter {
    pub from_ms: u64,
    pub to_ms: u64,
    pub campaign_id: Option<u32>,
    pub affiliate_id: Option<u32>,
    pub status: Option<ConversionStatus>,
    /// Only conversions after this (time, id) position.
    pub after: Option<(u64, Id)>,
    pub limit: usize,
}

pub type Reply<T> = oneshot::Sender<T>;

pub enum Cmd {
    Click(Box<ClickDraft>, Reply<Result<bool, Unavailable>>),
    /// Many clicks in one command (bulk ingestion); answers how many were recorded.
    Clicks(Vec<ClickDraft>, Reply<Result<usize, Unavailable>>),
    /// Was this click (of this campaign) made since `since_ms`? (Cookie uniqueness across
    /// shards.)
    RecentClick {
        id: Id,
        campaign_id: u32,
        since_ms: u64,
        reply: Reply<bool>,
    },
    Impression {
        rec: ImpressionRec,
        unique_window_ms: u64,
        reply: Reply<Result<(), Unavailable>>,
    },
    Convert(Arc<ConvInput>, How, Reply<ConvReply>),
    SetStatus(
        Id,
        ConversionStatus,
        Reply<Result<ConversionView, AdminError>>,
    ),
    ClickView(Id, Reply<Option<ClickView>>),
    /// The shard's conversions, frozen (the admin API lists conversions and deliveries
    /// from them off the actor).
    Conversions(Reply<FrozenConversions>),
    Replay(DeliveryId, Reply<Result<DeliveryView, AdminError>>),
    Attempt(AttemptReport),
    /// The shard's report counters, frozen (a report groups them off the actor).
    Counters(Reply<FrozenCounters>),
    /// Clicks held and the bytes their store and indexes use.
    Memory(Reply<(usize, usize)>),
    /// Submits every pending delivery to the dispatcher (after recovery).
    ResumeDeliveries,
    /// Syncs the log and stops the actor.
    Shutdown(Reply<()>),
}

/// A reply to send once the batch's fate is known: the answer if the batch is durable,
/// and which "unavailable" answer if not. An enum rather than a boxed closure: one
/// allocation per request less, and no call through a pointer.
enum Deferred {
    Click(Reply<Result<bool, Unavailable>>, bool),
    Clicks(Reply<Result<usize, Unavailable>>, usize),
    Impression(Reply<Result<(), Unavailable>>),
    // The larger answers are boxed, so they do not grow every entry (a click's is 24 bytes).
    Convert(Reply<ConvReply>, Box<ConvReply>),
    Status(
        Reply<Result<ConversionView, AdminError>>,
        Box<ConversionView>,
    ),
    Replay(Reply<Result<DeliveryView, AdminError>>, Box<DeliveryView>),
    /// Shutdown's answer: sent last, whatever the fate.
    Shutdown(Reply<()>),
}

const _: () = assert!(std::mem::size_of::<Deferred>() <= 24);

impl Deferred {
    /// Sends the answer (`durable`: the batch's sync succeeded, or none was needed).
    fn send(self, durable: bool) {
        const FAILED: &str = "commit failed";
        let failed = || Unavailable(FAILED.into());
        let admin_failed = || AdminError::Unavailable(FAILED.into());
        // A receiver gone (the caller gave up) is no error here.
        match self {
            Deferred::Click(reply, unique) => {
                let _ = reply.send(if durable { Ok(unique) } else { Err(failed()) });
            }
            Deferred::Clicks(reply, n) => {
                let _ = reply.send(if durable { Ok(n) } else { Err(failed()) });
            }
            Deferred::Impression(reply) => {
                let _ = reply.send(if durable { Ok(()) } else { Err(failed()) });
            }
            Deferred::Convert(reply, answer) => {
                let _ = reply.send(if durable {
                    *answer
                } else {
                    ConvReply::Done(crate::api::ConversionOutcome::unavailable())
                });
            }
            Deferred::Status(reply, view) => {
                let _ = reply.send(if durable {
                    Ok(*view)
                } else {
                    Err(admin_failed())
                });
            }
            Deferred::Replay(reply, view) => {
                let _ = reply.send(if durable {
                    Ok(*view)
                } else {
                    Err(admin_failed())
                });
            }
            Deferred::Shutdown(reply) => {
                let _ = reply.send(());
            }
        }
    }
}

/// Where a shard's actor lives: the task locks it for each batch; dropping the engine takes
/// the actor out (joining its syncer and closing its log) so the data directory can be
/// reopened at once, as a crash would leave it.
pub type ShardSlot = Arc<Mutex<Option<ShardActor>>>;

/// The shard's metric handles, looked up once: `metrics::gauge!` with a label allocates
/// the label and searches the registry on every call, which per batch of one command (a
/// lightly loaded shard) was a visible share of a click's cost.
struct ShardMetrics {
    queue_depth: metrics::Gauge,
    batch_commands: metrics::Histogram,
    wal_bytes: metrics::Gauge,
    wal_syncs: metrics::Gauge,
    wal_last_sync_batch_records: metrics::Gauge,
    /// Deliveries pending, delivered and failed (the order of `delivery_states`).
    deliveries: [metrics::Gauge; 3],
    /// `clicktrail_conversions_total` per (match, status) seen so far: a handful at most.
    conversions: Vec<((MatchedBy, OutcomeStatus), metrics::Counter)>,
}

impl ShardMetrics {
    fn new(index: usize) -> Self {
        let shard = index.to_string();
        let delivery = |state: &'static str| metrics::gauge!("clicktrail_deliveries", "state" => state, "shard" => shard.clone());
        ShardMetrics {
            queue_depth: metrics::gauge!("clicktrail_shard_queue_depth", "shard" => shard.clone()),
            batch_commands: metrics::histogram!("clicktrail_shard_batch_commands"),
            wal_bytes: metrics::gauge!("clicktrail_wal_bytes", "shard" => shard.clone()),
            wal_syncs: metrics::gauge!("clicktrail_wal_syncs", "shard" => shard.clone()),
            wal_last_sync_batch_records: metrics::gauge!("clicktrail_wal_last_sync_batch_records", "shard" => shard.clone()),
            deliveries: [
                delivery("pending"),
                delivery("delivered"),
                delivery("failed"),
            ],
            conversions: Vec::new(),
        }
    }
}

/// Per-shard settings.
#[derive(Clone, Debug)]
pub struct ShardSettings {
    pub index: usize,
    pub snapshot_every_records: u64,
    /// Kept records a compaction replays per batch (see [`ShardActor::catch_up`]).
    pub compaction_catch_up_records: usize,
}

pub struct ShardActor {
    // Declared first so it drops first: the syncer finishes what it was sent before the
    // log closes.
    syncer: Syncer,
    /// The snapshot whose file is being written, if any (one at a time).
    snapshot_writer: Option<snapshot_writer::SnapshotWriter>,
    /// The compaction that snapshot carries, if any, and if not given up.
    compaction: Option<Compaction>,
    /// Deletes the files the last finished snapshot replaced.
    trimmer: Trimmer,
    settings: ShardSettings,
    pub state: ShardState,
    wal: wal::Wal,
    shared: Arc<Shared>,
    dispatcher: Dispatcher,
    poisoned: Option<String>,
    records_since_snapshot: u64,
    /// Items the state held at the last snapshot (see [`Self::snapshot_due_after`]).
    items_at_last_snapshot: usize,
    /// Items past their retention that the last compaction kept (old conversions whose
    /// click stays, see [`ShardState::expired_items`]): not a reason to compact again.
    expired_kept: usize,
    buf: Vec<u8>,
    /// What waits on the current batch's durability.
    current: SyncJob,
    wrote: bool,
    /// Taken at the first batch, after the process installed its recorder (see `meters`).
    metrics: Option<ShardMetrics>,
}

/// Rebuilds a shard's state from what its log recovered.
pub fn recover_state(recovered: &wal::Recovered) -> Result<ShardState, crate::Error> {
    let mut state = match &recovered.snapshot {
        Some(s) => ShardState::from_snapshot(
            codec::decode_shard_snapshot(&s.data)
                .map_err(|e| crate::Error::Config(format!("shard snapshot: {e}")))?,
        ),
        None => ShardState::default(),
    };
    replay(
        &mut state,
        recovered
            .records
            .iter()
            .map(|r| (r.lsn, r.kind, r.payload.as_slice())),
    )?;
    Ok(state)
}

/// Applies logged records (LSN, kind, payload) to a state in log order: recovery's path,
/// and a compaction's, which replays the records appended while its snapshot was being
/// written onto the state rebuilt from that snapshot, so that the swapped-in state is
/// what recovering from that snapshot would give.
fn replay<'a>(
    state: &mut ShardState,
    records: impl Iterator<Item = (wal::Lsn, u8, &'a [u8])> + Clone,
) -> Result<(), crate::Error> {
    let clicks = records
        .clone()
        .filter(|&(_, kind, payload)| codec::is_shard_click(kind, payload))
        .count();
    state.reserve_clicks(clicks);
    // Clicks, nearly all of a shard's records, are applied in place, a group at a time:
    // the group's index slots are read first, so their cache misses overlap.
    let mut group = Vec::with_capacity(RECOVERY_CLICK_GROUP);
    for (lsn, kind, payload) in records {
        let fail = |e: codec::DecodeError| crate::Error::Config(format!("shard record {lsn}: {e}"));
        if let Some(click) = codec::decode_shard_click(kind, payload).map_err(fail)? {
            group.push(click);
            if group.len() == RECOVERY_CLICK_GROUP {
                apply_clicks(state, &mut group);
            }
            continue;
        }
        // In log order: the clicks before this record first.
        apply_clicks(state, &mut group);
        let rec = codec::decode_shard_record(kind, payload).map_err(fail)?;
        state.apply(rec);
    }
    apply_clicks(state, &mut group);
    Ok(())
}

/// Clicks recovery decodes before applying them: enough for their index reads to overlap
/// (a core keeps a few tens of misses in flight), few enough that the slots read are
/// still cached when the clicks are applied.
const RECOVERY_CLICK_GROUP: usize = 16;

/// Applies (and empties) a group of decoded clicks, reading their index slots first.
fn apply_clicks(state: &mut ShardState, group: &mut Vec<codec::ClickRecRef<'_>>) {
    let touched = group.iter().fold(0, |acc, c| {
        acc ^ state.touch_click_slots(&Id(c.id), c.fingerprint, c.campaign_id)
    });
    // Keeps the loads: their values are otherwise unused.
    std::hint::black_box(touched);
    for click in group.drain(..) {
        state.apply_click_ref(&click);
    }
}

/// Drops a whole shard state on a thread of its own, not on the actor (see
/// [`ShardActor::catch_up`]): freeing the state a compaction replaced took 9-10 ms at a
/// million clicks and 17 ms at two million, the larger part of the swap's stall. The
/// thread only frees memory (no file, no lock), so it may outlive the shard; should it
/// fail to start, the state is dropped here after all.
fn drop_elsewhere(state: ShardState) {
    let spawned = crate::background::spawn("shard-drop".into(), move || drop(state));
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "no thread to drop a replaced state on");
    }
}

/// Deletes the files a finished snapshot replaced ([`wal::Trim`]) on a thread of its own:
/// on the actor, deleting a 64 MiB segment and syncing the directory took 23 ms at a
/// million clicks (the one slow batch left after each snapshot), holding every answer of
/// the shard. One at a time; joined before the next starts, at shutdown and when the
/// shard is dropped, so that no deletion runs under a log reopened on the same directory.
#[derive(Default)]
struct Trimmer(Option<std::thread::JoinHandle<()>>);

impl Trimmer {
    fn start(&mut self, shard: usize, trim: wal::Trim) {
        self.join();
        if trim.names().is_empty() {
            return;
        }
        let names = trim.names().join(", ");
        let spawned = crate::background::spawn(format!("shard-trim-{shard:03}"), move || {
            if let Err(e) = trim.run() {
                tracing::warn!(shard, error = %e, "deleting files a snapshot replaced failed");
            }
        });
        match spawned {
            Ok(handle) => self.0 = Some(handle),
            Err(e) => tracing::warn!(
                shard,
                error = %e,
                files = names,
                "no thread to delete files a snapshot replaced; they stay"
            ),
        }
    }

    fn join(&mut self) {
        if let Some(handle) = self.0.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Trimmer {
    fn drop(&mut self) {
        self.join();
    }
}

fn lock(slot: &ShardSlot) -> std::sync::MutexGuard<'_, Option<ShardActor>> {
    // A panic inside a batch is caught before it can poison the lock (see `run`).
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fills `batch` from the mailbox up to [`MAX_BATCH`] with whatever is queued. No need to
/// wait longer: what arrives while the syncer is busy joins the next sync anyway.
fn gather(mailbox: &mut mpsc::Receiver<Cmd>, batch: &mut Vec<Cmd>) {
    while batch.len() < MAX_BATCH {
        match mailbox.try_recv() {
            Ok(cmd) => batch.push(cmd),
            Err(_) => break,
        }
    }
}

impl ShardActor {
    pub fn new(
        settings: ShardSettings,
        state: ShardState,
        wal: wal::Wal,
        shared: Arc<Shared>,
        dispatcher: Dispatcher,
    ) -> std::io::Result<Self> {
        // As if the recovered state had just been snapshotted: the next snapshot comes
        // after as many records as it holds (or the interval), not at once.
        let items_at_last_snapshot = state.items_held();
        Ok(ShardActor {
            syncer: Syncer::start(settings.index, Arc::clone(&shared), dispatcher.clone())?,
            settings,
            state,
            wal,
            shared,
            dispatcher,
            poisoned: None,
            records_since_snapshot: 0,
            items_at_last_snapshot,
            expired_kept: 0,
            snapshot_writer: None,
            compaction: None,
            trimmer: Trimmer::default(),
            buf: Vec::with_capacity(512),
            current: SyncJob::default(),
            wrote: false,
            metrics: None,
        })
    }

    /// Runs the actor in `slot` until shutdown, until every sender is gone, or until the
    /// slot is emptied (the engine was dropped).
    pub async fn run(slot: ShardSlot, mut mailbox: mpsc::Receiver<Cmd>) {
        let (index, sync_interval) = match lock(&slot).as_ref() {
            Some(actor) => match actor.wal.sync_policy() {
                wal::SyncPolicy::Interval(interval) => (actor.settings.index, Some(interval)),
                _ => (actor.settings.index, None),
            },
            None => return,
        };
        let mut dirty = false;
        let mut batch = Vec::with_capacity(16);
        loop {
            let first = match sync_interval {
                Some(interval) if dirty => {
                    let wait = lock(&slot)
                        .as_ref()
                        .and_then(|a| a.wal.sync_due_in())
                        .unwrap_or(interval);
                    tokio::select! {
                        cmd = mailbox.recv() => cmd,
                        _ = tokio::time::sleep(wait) => {
                            if let Some(actor) = lock(&slot).as_mut() {
                                actor.sync_in_background();
                            }
                            dirty = false;
                            continue;
                        }
                    }
                }
                _ => mailbox.recv().await,
            };
            let Some(first) = first else { break };
            batch.push(first);
            // The connection task that sent `first` woke this task into the runtime's
            // next-to-run slot, ahead of the other connections that are ready: going to
            // the back of the queue once lets them send their commands too, so one batch
            // (one lock, one hand-off to the syncer) serves all of them instead of one.
            tokio::task::yield_now().await;
            gather(&mut mailbox, &mut batch);
            let queued = mailbox.len();
            let mut guard = lock(&slot);
            let Some(actor) = guard.as_mut() else { break };
            actor.metrics().queue_depth.set(queued as f64);
            // A bug must not silently take a shard away: report it as a fault and stop.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                actor.run_batch(&mut batch)
            }));
            batch.clear();
            match ran {
                Ok((stop, wrote)) => {
                    dirty |= wrote;
                    if stop {
                        // Closes the log and joins the syncer (which sends the shutdown
                        // answer last).
                        guard.take();
                        break;
                    }
                }
                Err(_) => {
                    if let Some(actor) = guard.take() {
                        actor
                            .shared
                            .health
                            .fault(format!("shard {index} stopped after a panic"));
                    }
                    break;
                }
            }
        }
    }

    /// Reads the index slots the batch's clicks will probe, all at once (see
    /// [`ShardState::touch_click_slots`]).
    fn touch_click_slots(&self, batch: &[Cmd]) {
        if let [Cmd::Click(..)] = batch {
            // One click probes at once anyway.
            return;
        }
        let mut touched = 0;
        for cmd in batch {
            match cmd {
                Cmd::Click(draft, _) => touched ^= self.touch_draft(draft),
                Cmd::Clicks(drafts, _) => {
                    for draft in drafts {
                        touched ^= self.touch_draft(draft);
                    }
                }
                _ => {}
            }
        }
        // Keeps the loads: their values are otherwise unused.
        std::hint::black_box(touched);
    }

    fn touch_draft(&self, draft: &ClickDraft) -> u64 {
        let rec = &draft.rec;
        self.state
            .touch_click_slots(&Id(rec.id), rec.fingerprint, rec.campaign_id)
    }

    /// Applies a batch and hands it to the syncer. Returns (stop, wrote).
    fn run_batch(&mut self, batch: &mut Vec<Cmd>) -> (bool, bool) {
        let mut shutdown = None;
        let size = batch.len();
        self.touch_click_slots(batch);
        for cmd in batch.drain(..) {
            match cmd {
                Cmd::Shutdown(reply) => shutdown = Some(reply),
                cmd => self.handle(cmd),
            }
        }
        self.metrics().batch_commands.record(size as f64);
        let wrote = std::mem::replace(&mut self.wrote, false);
        if wrote {
            // `always`: answers wait for the sync that covers them (group commit).
            if self.wal.sync_policy() == wal::SyncPolicy::Always {
                match self.wal.begin_sync() {
                    Ok(pending) => self.current.pending = pending,
                    Err(e) => {
                        self.poison(e.to_string());
                        self.current
                            .finish_here(false, &self.shared, &self.dispatcher);
                    }
                }
            } else if self.wal.sync_due_in() == Some(std::time::Duration::ZERO) {
                // `interval`: a sync is due; the syncer runs it, answers do not wait.
                self.sync_in_background();
            }
            let stats = self.wal.stats();
            let m = self.metrics();
            m.wal_bytes.set(stats.bytes_appended as f64);
            m.wal_syncs.set(stats.syncs as f64);
            m.wal_last_sync_batch_records
                .set(stats.last_sync_batch_records as f64);
            self.publish_delivery_states();
        }
        if self.current.pending.is_some() {
            let job = std::mem::take(&mut self.current);
            self.syncer.send(job, &self.shared, &self.dispatcher);
        } else {
            // Nothing to wait for (reads, refusals, or a policy that answers before the
            // sync): answer now, without a trip through the syncer (and keep the job's
            // lists for the next batch).
            self.current.finish_here(
                self.poisoned.is_none() || !wrote,
                &self.shared,
                &self.dispatcher,
            );
        }
        self.reap_snapshot(false);
        self.catch_up();
        // Not while a compaction catches up: its kept records are this state's too.
        if self.snapshot_writer.is_none()
            && self.compaction.is_none()
            && self.records_since_snapshot >= self.snapshot_due_after()
        {
            self.snapshot();
        }
        if let Some(reply) = shutdown {
            self.reap_snapshot(true);
            self.trimmer.join();
            if let Err(e) = self.wal.sync() {
                self.poison(e.to_string());
            }
            // Through the syncer, so it comes after every answer still waiting there.
            let answer = SyncJob {
                replies: vec![Deferred::Shutdown(reply)],
                ..SyncJob::default()
            };
            self.syncer.send(answer, &self.shared, &self.dispatcher);
            return (true, wrote);
        }
        (false, wrote)
    }

    /// Records between snapshots: the configured interval, or as many records as the last
    /// snapshot held items if that is more. A snapshot writes the whole state, so its cost
    /// grows with it; spread over at least as many records as it wrote, it stays a fixed
    /// share of the work per record (at 1 M records a snapshot of a shard holding a
    /// million conversions took a large share of the CPU and stalled answers for a second),
    /// while recovery still replays at most about the state's size after the snapshot.
    ///
    /// The items held at the last snapshot, not now: a state that only grows (clicks, none
    /// expiring yet) holds a new item per record, so "as many records as it holds now"
    /// was never reached after the first snapshot, and the log grew without end.
    fn snapshot_due_after(&self) -> u64 {
        self.settings
            .snapshot_every_records
            .max(self.items_at_last_snapshot as u64)
    }

    /// Under `sync = interval`: starts a sync of what is due without waiting for it.
    fn sync_in_background(&mut self) {
        match self.wal.begin_sync() {
            Ok(Some(pending)) => {
                let job = SyncJob {
                    pending: Some(pending),
                    ..SyncJob::default()
                };
                self.syncer.send(job, &self.shared, &self.dispatcher);
            }
            Ok(None) => {}
            Err(e) => self.poison(e.to_string()),
        }
    }

    fn metrics(&mut self) -> &mut ShardMetrics {
        let index = self.settings.index;
        self.metrics.get_or_insert_with(|| ShardMetrics::new(index))
    }

    /// Sets the deliveries-per-state gauges from the state.
    fn publish_delivery_states(&mut self) {
        let states = self.state.delivery_states();
        for (gauge, n) in self.metrics().deliveries.iter().zip(states) {
            gauge.set(n as f64);
        }
    }

    /// Counts a conversion answer in `clicktrail_conversions_total`, through a handle
    /// kept per label pair (`metrics::counter!` builds its labels and searches the
    /// registry on every call).
    fn count_conversion(&mut self, by: MatchedBy, status: OutcomeStatus) {
        let counters = &mut self.metrics().conversions;
        if let Some((_, counter)) = counters.iter().find(|(key, _)| *key == (by, status)) {
            counter.increment(1);
            return;
        }
        let counter = metrics::counter!("clicktrail_conversions_total", "matched_by" => by.as_str(), "status" => status.as_str());
        counter.increment(1);
        counters.push(((by, status), counter));
    }

    fn poison(&mut self, reason: String) {
        if self.poisoned.is_none() {
            self.shared
                .health
                .fault(format!("shard {}: {reason}", self.settings.index));
            self.poisoned = Some(reason);
        }
    }

    /// Appends a record (not yet durable). On success the caller applies it to memory.
    fn write(&mut self, record: &ShardRecord) -> Result<(), Unavailable> {
        if let Some(reason) = &self.poisoned {
            return Err(Unavailable(reason.clone()));
        }
        let kind = codec::encode_shard_record(record, &mut self.buf);
        match self.wal.append(kind, &self.buf) {
            Ok(lsn) => {
                self.wrote = true;
                self.records_since_snapshot += 1;
                self.keep_for_compaction(lsn, kind);
                Ok(())
            }
            Err(wal::Error::RecordTooLarge { len, max }) => {
                Err(Unavailable(format!("record of {len} bytes exceeds {max}")))
            }
            Err(e) => {
                let reason = e.to_string();
                self.poison(reason.clone());
                Err(Unavailable(reason))
            }
        }
    }

    /// Keeps the record just appended (in `buf`) for the compaction in flight, if any;
    /// gives the compaction up past [`COMPACTION_REPLAY_MAX_BYTES`].
    fn keep_for_compaction(&mut self, lsn: wal::Lsn, kind: u8) {
        let Some(compaction) = &mut self.compaction else {
            return;
        };
        let end = compaction.bytes.len() + self.buf.len();
        let index_bytes = (compaction.records.len() + 1) * std::mem::size_of::<KeptRecord>();
        if end + index_bytes > COMPACTION_REPLAY_MAX_BYTES {
            tracing::warn!(
                shard = self.settings.index,
                records = compaction.records.len(),
                "compaction given up: more records came while its snapshot was written \
                 than it keeps to replay; the next snapshot tries again"
            );
            if let Some(rebuilt) = self.compaction.take().and_then(|c| c.rebuilt) {
                drop_elsewhere(rebuilt.state);
            }
            return;
        }
        compaction.bytes.extend_from_slice(&self.buf);
        compaction.records.push((lsn, kind, end));
    }

    fn defer(&mut self, reply: Deferred) {
        self.current.replies.push(reply);
    }

    fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Click(draft, reply) => {
                let result = self.click(*draft);
                match result {
                    Ok(unique) => self.defer(Deferred::Click(reply, unique)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Cmd::Clicks(drafts, reply) => {
                let mut recorded = 0;
                for draft in drafts {
                    if self.click(draft).is_ok() {
                        recorded += 1;
                    }
                }
                self.defer(Deferred::Clicks(reply, recorded));
            }
            Cmd::RecentClick {
                id,
                campaign_id,
                since_ms,
                reply,
            } => {
                let recent = self
                    .state
                    .find_click(&id)
                    .and_then(|i| self.state.click(i))
                    .is_some_and(|c| c.campaign_id == campaign_id && c.time_ms > since_ms);
                let _ = reply.send(recent);
            }
            Cmd::Impression {
                mut rec,
                unique_window_ms,
                reply,
            } => {
                rec.unique = self
                    .state
                    .last_impression_ms(rec.fingerprint, rec.campaign_id)
                    .is_none_or(|t| rec.time_ms.saturating_sub(t) >= unique_window_ms);
                let record = ShardRecord::Impression(rec);
                match self.write(&record) {
                    Ok(()) => {
                        self.state.apply(record);
                        self.defer(Deferred::Impression(reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Cmd::Convert(input, how, reply) => {
                let (answer, wrote) = self.convert(&input, how);
                if wrote {
                    self.defer(Deferred::Convert(reply, Box::new(answer)));
                } else {
                    let _ = reply.send(answer);
                }
            }
            Cmd::SetStatus(id, status, reply) => {
                let result = self.set_status(&id, status);
                match result {
                    Ok((view, true)) => self.defer(Deferred::Status(reply, Box::new(view))),
                    Ok((view, false)) => {
                        let _ = reply.send(Ok(view));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Cmd::ClickView(id, reply) => {
                let _ = reply.send(self.click_view(&id));
            }
            Cmd::Conversions(reply) => {
                let _ = reply.send(FrozenConversions(self.state.conversions.share()));
            }
            Cmd::Replay(id, reply) => {
                let result = self.replay(&id);
                match result {
                    Ok(view) => self.defer(Deferred::Replay(reply, Box::new(view))),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Cmd::Attempt(report) => self.attempt(report),
            Cmd::Counters(reply) => {
                let _ = reply.send(self.state.freeze_counters());
            }
            Cmd::Memory(reply) => {
                let _ = reply.send((self.state.click_count(), self.state.click_memory_bytes()));
            }
            Cmd::ResumeDeliveries => {
                for c in &self.state.conversions {
                    for d in &c.deliveries {
                        if d.state == DeliveryState::Pending {
                            self.current
                                .deliveries
                                .push(crate::delivery::job(&Id(c.id), d));
                        }
                    }
                }
            }
            Cmd::Shutdown(_) => {}
        }
    }

    fn click(&mut self, draft: ClickDraft) -> Result<bool, Unavailable> {
        let ClickDraft {
            mut rec,
            unique_window_ms: window_ms,
            cookie,
            cookie_recent_elsewhere,
        } = draft;
        if self.state.is_full() {
            return Err(Unavailable(format!(
                "shard {} holds as many clicks as it can index",
                self.settings.index
            )));
        }
        let since = rec.time_ms.saturating_sub(window_ms);
        let recent = |idx: Option<u32>| {
            idx.and_then(|i| self.state.click(i))
                .is_some_and(|c| c.campaign_id == rec.campaign_id && c.time_ms > since)
        };
        let by_fingerprint = recent(self.state.latest_click(rec.fingerprint, rec.campaign_id));
        let by_cookie =
            cookie_recent_elsewhere || recent(cookie.and_then(|id| self.state.find_click(&id)));
        rec.unique = window_ms == 0 || !(by_fingerprint || by_cookie);
        let unique = rec.unique;
        let record = ShardRecord::Click(rec);
        self.write(&record)?;
        self.state.apply(record);
        Ok(unique)
    }

    fn set_status(
        &mut self,
        id: &Id,
        status: ConversionStatus,
    ) -> Result<(ConversionView, bool), AdminError> {
        let now = self.now_ms();
        let Some(c) = self
            .state
            .conversion(id)
            .filter(|c| !self.past_retention(c, now))
        else {
            return Err(AdminError::NotFound);
        };
        if c.status == status {
            return Ok((crate::view::conversion_view(c), false));
        }
        let first_seq = c.deliveries.len() as u32;
        let deliveries =
            crate::delivery::deliveries_for(&self.shared.catalog, c, status, first_seq, now);
        let record = ShardRecord::StatusChange {
            conversion_id: id.0,
            status,
            time_ms: now,
            audit: format!(
                "{}: status changed from {} to {} by an admin",
                crate::view::rfc3339(now),
                c.status.as_str(),
                status.as_str()
            ),
            deliveries: deliveries.clone(),
        };
        self.write(&record)
            .map_err(|e| AdminError::Unavailable(e.0))?;
        self.state.apply(record);
        for d in &deliveries {
            self.current.deliveries.push(crate::delivery::job(id, d));
        }
        let view = self
            .state
            .conversion(id)
            .map(crate::view::conversion_view)
            .ok_or(AdminError::NotFound)?;
        Ok((view, true))
    }

    fn replay(&mut self, id: &DeliveryId) -> Result<DeliveryView, AdminError> {
        let now = self.now_ms();
        let found = self
            .state
            .conversion(&id.conversion)
            .filter(|c| !self.past_retention(c, now))
            .is_some_and(|c| c.deliveries.iter().any(|d| d.seq == id.seq));
        if !found {
            return Err(AdminError::NotFound);
        }
        let record = ShardRecord::Replay {
            conversion_id: id.conversion.0,
            seq: id.seq,
            time_ms: now,
        };
        self.write(&record)
            .map_err(|e| AdminError::Unavailable(e.0))?;
        self.state.apply(record);
        let c = self
            .state
            .conversion(&id.conversion)
            .ok_or(AdminError::NotFound)?;
        let d = c
            .deliveries
            .iter()
            .find(|d| d.seq == id.seq)
            .ok_or(AdminError::NotFound)?;
        self.current
            .deliveries
            .push(crate::delivery::job(&id.conversion, d));
        Ok(crate::view::delivery_view(c, d))
    }

    fn attempt(&mut self, report: AttemptReport) {
        let Some(id) = DeliveryId::parse(&report.delivery_id) else {
            return;
        };
        let Some(d) = self.state.delivery_mut(&id.conversion, id.seq) else {
            return;
        };
        if d.state != DeliveryState::Pending {
            // A late report for a delivery already settled (e.g. replayed meanwhile).
            tracing::debug!(delivery = %report.delivery_id, "attempt report for a settled delivery");
        }
        let (state, next, result) = match &report.outcome {
            AttemptOutcome::Delivered { status } => {
                (DeliveryState::Delivered, 0, status.to_string())
            }
            AttemptOutcome::Retrying {
                result,
                next_attempt_ms,
            } => (DeliveryState::Pending, *next_attempt_ms, result.clone()),
            AttemptOutcome::Failed { result } => (DeliveryState::Failed, 0, result.clone()),
        };
        metrics::counter!("clicktrail_delivery_attempts_total", "state" => match state {
            DeliveryState::Pending => "retrying",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        })
        .increment(1);
        let record = ShardRecord::Attempt {
            conversion_id: id.conversion.0,
            seq: id.seq,
            attempt: codec::AttemptRec {
                attempt: report.attempt,
                started_ms: report.started_ms,
                latency_ms: report.latency_ms,
                result,
            },
            state,
            next_attempt_ms: next,
        };
        if self.write(&record).is_ok() {
            self.state.apply(record);
        }
    }

    /// Whether this conversion is past its retention now (see [`retention`]): an admin
    /// change to it (status, delivery replay) answers "not found", as it does once memory
    /// has shed it. Memory may still hold it (until a compaction, see
    /// [`COMPACT_WHEN_EXPIRED_ONE_IN`], which may be in flight), but the last snapshot (or
    /// the one being written) may have left it out: accepted, the change's record would
    /// be replayed at a restart (or the compaction's swap) onto a state without the
    /// conversion, and the change, in reports too, would be lost.
    ///
    /// The rules at `now` leave out all that a snapshot taken earlier left out: its click
    /// is older still, so is it, and it cannot have gained a pending delivery since, as
    /// only the changes refused here add one.
    fn past_retention(&self, c: &codec::ConversionRec, now_ms: u64) -> bool {
        let rules = retention(&self.shared.catalog, now_ms);
        let click_kept = c
            .click_id
            .and_then(|id| self.state.find_click(&Id(id)))
            .and_then(|i| self.state.click(i))
            .is_some_and(|click| click.time_ms >= rules.keep_clicks_since_ms);
        !(rules.keep_conversion)(c, click_kept)
    }

    fn click_view(&self, id: &Id) -> Option<ClickView> {
        let idx = self.state.find_click(id)?;
        let c = self.state.click(idx)?;
        let (subs, extras) = self.state.tail(c);
        Some(ClickView {
            click_id: id.to_string(),
            campaign_id: c.campaign_id,
            affiliate_id: c.affiliate_id,
            creative_id: c.creative_id(),
            sub_ids: subs.to_vec(),
            extras: extras.to_vec(),
            time: crate::view::rfc3339(c.time_ms),
            ip: self.state.click_ip(idx, c).to_string(),
            unique: c.unique(),
            conversions: self
                .state
                .conversions_of(id)
                .map(crate::view::conversion_view)
                .collect(),
        })
    }

    /// Tells the log about a snapshot whose file its thread has written (waiting for the
    /// thread when `wait`), so the log can delete what the snapshot replaces.
    fn reap_snapshot(&mut self, wait: bool) {
        let Some(writer) = self
            .snapshot_writer
            .take_if(|writer| wait || writer.is_finished())
        else {
            return;
        };
        let done = writer.wait();
        let finished = done.written.and_then(|written| {
            let trim = self.wal.finish_snapshot(written.lsn)?;
            self.trimmer.start(self.settings.index, trim);
            Ok(written)
        });
        match finished {
            Ok(written) => tracing::info!(
                shard = self.settings.index,
                lsn = written.lsn,
                bytes = written.bytes,
                build_ms = written.build.as_millis(),
                write_ms = written.write.as_millis(),
                left_out_clicks = written.left_out.clicks,
                left_out_conversions = written.left_out.conversions,
                left_out_impressions = written.left_out.impressions,
                "snapshot written"
            ),
            Err(e) => {
                tracing::warn!(shard = self.settings.index, error = %e, "snapshot failed");
            }
        }
        if let Some(compacted) = done.compacted {
            self.start_catch_up(compacted);
        }
    }

    /// Hands the state a compaction's thread rebuilt from its snapshot to the compaction,
    /// to catch up with the records kept since (see [`Self::catch_up`]).
    fn start_catch_up(&mut self, compacted: ShardState) {
        let Some(compaction) = &mut self.compaction else {
            // Given up (see `keep_for_compaction`).
            drop_elsewhere(compacted);
            return;
        };
        let (keep_clicks_since, keep_conversions_since) = compaction.horizons;
        let seen = compaction.records.len();
        compaction.rebuilt = Some(Rebuilt {
            seen,
            items_at_snapshot: compacted.items_held(),
            expired_kept: compacted.expired_items(keep_clicks_since, keep_conversions_since),
            state: compacted,
            replayed: 0,
            since: std::time::Instant::now(),
        });
    }

    /// Replays up to [`ShardSettings::compaction_catch_up_records`] of the records kept
    /// since a compaction's snapshot onto the state its thread rebuilt, and once none is
    /// left, swaps that state in for the live one. The result is what recovery from that
    /// snapshot and the log after it gives (the same decoding and [`ShardState::apply`]),
    /// so a record about an item the snapshot left out (a late attempt report for a
    /// settled delivery of a conversion past retention) is handled as recovery handles
    /// it; admin changes to such conversions were refused meanwhile (see
    /// [`Self::past_retention`]).
    ///
    /// What this leaves on the actor is the replay, about 0.3 µs per record appended
    /// meanwhile (3 ms for 9 k clicks), instead of a rebuild of the whole state (160 ms
    /// at a million clicks), and a bounded share of it per batch: a snapshot thread that
    /// yields the CPU to the shard (see `background`) can take seconds under load, and
    /// hundreds of thousands of records replayed at once would hold every answer of the
    /// shard for as many tenths of a second. Records keep coming meanwhile: each step
    /// also replays as many as were kept since the last, so the backlog shrinks by the
    /// setting at every step.
    fn catch_up(&mut self) {
        let Some(Compaction {
            bytes,
            records,
            rebuilt: Some(rebuilt),
            ..
        }) = &mut self.compaction
        else {
            return;
        };
        // The setting, beyond the records kept since the last step: so the backlog
        // shrinks by that much at every step, however busy the shard.
        let kept_since = records.len() - rebuilt.seen;
        rebuilt.seen = records.len();
        let budget = self.settings.compaction_catch_up_records + kept_since;
        let end = records.len().min(rebuilt.replayed + budget);
        let replayed = replay(
            &mut rebuilt.state,
            kept_records(bytes, records, rebuilt.replayed..end),
        );
        rebuilt.replayed = end;
        let caught_up = end == records.len();
        if let Err(e) = replayed {
            // Never: these records were encoded by this actor a moment ago.
            tracing::error!(shard = self.settings.index, error = %e, "compaction given up");
            if let Some(rebuilt) = self.compaction.take().and_then(|c| c.rebuilt) {
                drop_elsewhere(rebuilt.state);
            }
            return;
        }
        if !caught_up {
            return;
        }
        let Some(Compaction {
            records,
            rebuilt: Some(rebuilt),
            ..
        }) = self.compaction.take()
        else {
            return;
        };
        let (clicks, conversions, impressions) = (
            self.state.click_count(),
            self.state.conversions.len(),
            self.state.impression_entries(),
        );
        let old = std::mem::replace(&mut self.state, rebuilt.state);
        drop_elsewhere(old);
        self.items_at_last_snapshot = rebuilt.items_at_snapshot;
        self.expired_kept = rebuilt.expired_kept;
        self.publish_delivery_states();
        tracing::info!(
            shard = self.settings.index,
            dropped_clicks = clicks.saturating_sub(self.state.click_count()),
            dropped_conversions = conversions.saturating_sub(self.state.conversions.len()),
            pruned_impressions = impressions.saturating_sub(self.state.impression_entries()),
            replayed_records = records.len(),
            catch_up_ms = rebuilt.since.elapsed().as_millis(),
            "state compacted"
        );
    }

    /// Takes a snapshot of the whole state and starts building and writing it on its own
    /// thread (see [`Self::reap_snapshot`]). The snapshot leaves out clicks past the
    /// longest cookie life, impression entries past their campaign's unique window and
    /// settled conversions past [`CONVERSION_RETENTION_MS`] (see [`retention`]).
    ///
    /// The live state sheds those only when they are worth a compaction (see
    /// [`COMPACT_WHEN_EXPIRED_ONE_IN`]): the snapshot's thread then also rebuilds the state
    /// from the snapshot, and the actor swaps it in once it has replayed onto it what came
    /// meanwhile (see [`Self::catch_up`]).
    fn snapshot(&mut self) {
        let now = self.now_ms();
        let catalog = Arc::clone(&self.shared.catalog);
        let horizons = retention_horizons(&catalog, now);
        let expired = self.state.expired_items(horizons.0, horizons.1);
        let held = self.state.click_count() + self.state.conversions.len();
        let newly_expired = expired.saturating_sub(self.expired_kept);
        let compact = newly_expired > 0 && newly_expired * COMPACT_WHEN_EXPIRED_ONE_IN >= held;
        let frozen = self.state.freeze();
        // Until a compaction is swapped in (which sets the snapshot's count).
        self.items_at_last_snapshot = self.state.items_held();
        let lsn = self.wal.next_lsn();
        // The records it covers are synced here; it is built and written on its own thread.
        let started_writer = self.wal.begin_snapshot(lsn).and_then(|pending| {
            Ok(snapshot_writer::SnapshotWriter::start(
                self.settings.index,
                pending,
                move |pending: wal::PendingSnapshot| {
                    let started = std::time::Instant::now();
                    let parts = frozen.snapshot_parts(retention(&catalog, now));
                    let left_out = snapshot_writer::LeftOut {
                        clicks: frozen.clicks.len() - parts.clicks.len(),
                        conversions: frozen.conversions.len() - parts.conversions.len(),
                        impressions: frozen.impressions.len() - parts.impressions.len(),
                    };
                    let built = std::time::Instant::now();
                    // Encoded straight into the file, never whole in memory.
                    let written =
                        pending
                            .run_streamed(|out| parts.encode_into(out))
                            .map(|(lsn, bytes)| snapshot_writer::Written {
                                lsn,
                                bytes,
                                build: built - started,
                                write: built.elapsed(),
                                left_out,
                            });
                    let to_compact = compact.then(|| parts.into_owned());
                    // Done with it: its shares of the live state's chunks go now, not
                    // after the rebuild below (the actor copies a chunk it writes to
                    // while one is shared).
                    drop(frozen);
                    snapshot_writer::Done {
                        written,
                        compacted: to_compact.map(ShardState::from_snapshot),
                    }
                },
            )?)
        });
        // Either way the next one is an interval away: the log itself is still fine.
        self.records_since_snapshot = 0;
        match started_writer {
            Ok(writer) => {
                self.snapshot_writer = Some(writer);
                if compact {
                    self.compaction = Some(Compaction {
                        horizons,
                        bytes: Vec::new(),
                        records: Vec::new(),
                        rebuilt: None,
                    });
                }
            }
            Err(e) => {
                tracing::warn!(shard = self.settings.index, error = %e, "snapshot failed");
            }
        }
        // Forget merchant references past the dedupe window.
        let horizon = now.saturating_sub(MERCHANT_REF_WINDOW_MS);
        self.shared.merchant_refs.retain(|_, (_, t)| *t >= horizon);
    }
}
