//! A shard's in-memory state: clicks (compact, fixed-size, with interned sub IDs and
//! extras), the click-ID and fingerprint indexes, impressions' uniqueness index,
//! conversions with their deliveries, and stats counters.
//!
//! Every change goes through an `apply_*` function taking the WAL record, both live (after
//! the record is appended) and during recovery, so replay rebuilds exactly the live state.

use super::chunked::Chunked;
use super::chunked_map::ChunkedMap;
use super::frozen::{Frozen, FrozenCounters, Retention};
use super::index::{tag_of, ClickIndex, Probe, MAX_INDEX};
use crate::api::DeliveryState;
use crate::codec::{
    AttemptRec, ClickRec, ClickRecRef, ClickSnap, ConversionRec, CountersRec, DeliveryRec,
    ImpressionRec, ShardRecord, ShardSnapshot, StatKeyRec, Tail,
};
use crate::config::ConversionStatus;
use crate::ids::Id;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// Clicks per chunk of the click store. Chunks of fixed capacity avoid the 2x slack of one
/// growing vector (at 10 M clicks that slack alone would be ~280 MB) and its copies.
pub(super) const CHUNK_CLICKS: usize = 1 << 16;
/// Conversions per chunk of the conversion store: about 1 MiB of records (240 bytes
/// each, their strings apart); the links between a click's conversions are chunked alike.
pub(super) const CHUNK_CONVERSIONS: usize = 1 << 12;
/// Entries per chunk of the shard's side tables (see [`ChunkedMap`]): 128 KiB or less
/// each, so that the first change to a chunk a snapshot still holds copies little.
pub(super) const CHUNK_TAILS: usize = 1 << 14;
pub(super) const CHUNK_SID1S: usize = 1 << 13;
pub(super) const CHUNK_IMPRESSIONS: usize = 1 << 12;
pub(super) const CHUNK_COUNTERS: usize = 1 << 10;
pub(super) const CHUNK_IPV6: usize = 1 << 12;
/// The link of a conversion without a click: it is in no click's ring (see
/// [`ShardState::conversion_links`]).
const NO_CLICK: u32 = u32::MAX;
const MS_PER_DAY: u64 = 86_400_000;

const FLAG_UNIQUE: u8 = 1;
const FLAG_HAS_CREATIVE: u8 = 2;
const FLAG_IPV6: u8 = 4;

/// A stored click: fixed-size; sub IDs and extras are an index into the shard's tails.
#[derive(Clone, Copy, Debug)]
pub struct ClickCore {
    pub id: Id,
    pub time_ms: u64,
    pub fingerprint: u64,
    pub campaign_id: u32,
    pub affiliate_id: u32,
    creative_id: u32,
    pub(super) tail: u32,
    /// IPv4 address; IPv6 addresses live in a side table (they are the minority).
    ip4: u32,
    flags: u8,
}
// The memory target (128 B per click, all indexes included) leaves ~70 B for the record.
const _: () = assert!(std::mem::size_of::<ClickCore>() <= 56);

impl ClickCore {
    pub fn unique(&self) -> bool {
        self.flags & FLAG_UNIQUE != 0
    }
    pub fn creative_id(&self) -> Option<u32> {
        (self.flags & FLAG_HAS_CREATIVE != 0).then_some(self.creative_id)
    }
    /// The click's IP address; `ipv6` looks an IPv6 address up in the shard's side table.
    pub(super) fn ip(&self, ipv6: impl FnOnce() -> Option<Ipv6Addr>) -> IpAddr {
        if self.flags & FLAG_IPV6 != 0 {
            IpAddr::V6(ipv6().unwrap_or(Ipv6Addr::UNSPECIFIED))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.ip4))
        }
    }
}

fn fp_hash(fingerprint: u64, campaign_id: u32) -> u64 {
    // The fingerprint is already a keyed hash; mixing in the campaign spreads its entries.
    fingerprint ^ u64::from(campaign_id).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The IPv6 address of click `idx` in a shard's side table of them (in click order).
fn ipv6_of(table: &Chunked<(u32, Ipv6Addr), CHUNK_IPV6>, idx: u32) -> Option<Ipv6Addr> {
    let at = table.partition_point(|&(click, _)| click < idx);
    table
        .get(at)
        .filter(|&&(click, _)| click == idx)
        .map(|&(_, address)| address)
}

/// A click's tail borrowed from a request or a log record: looked up in a [`TailInterner`]
/// without building the owned [`Tail`].
#[derive(Clone, Copy)]
pub struct TailRef<'a> {
    pub sub_ids: &'a [&'a str],
    pub extras: &'a [(&'a str, &'a str)],
}

impl std::hash::Hash for TailRef<'_> {
    /// Hashes exactly as the owned [`Tail`] does (a slice and a `Vec` both hash their
    /// length, then each item; `&str` and `String` hash as `str`), so either finds the other.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.sub_ids, self.extras).hash(state)
    }
}

impl hashbrown::Equivalent<Arc<Tail>> for TailRef<'_> {
    fn equivalent(&self, key: &Arc<Tail>) -> bool {
        let (subs, extras) = key.as_ref();
        subs.len() == self.sub_ids.len()
            && extras.len() == self.extras.len()
            && subs.iter().zip(self.sub_ids).all(|(a, b)| a == b)
            && extras
                .iter()
                .zip(self.extras)
                .all(|((k, v), (bk, bv))| k == bk && v == bv)
    }
}

/// Interns click tails per shard, so repeated sub IDs and extras are stored once. A tail's
/// ID is its position in the map.
#[derive(Default)]
struct TailInterner {
    tails: ChunkedMap<Arc<Tail>, (), CHUNK_TAILS>,
}

impl TailInterner {
    fn intern(&mut self, value: Tail) -> u32 {
        if let Some(i) = self.tails.position(&value) {
            return i;
        }
        let value = Arc::new(value);
        interned(
            self.tails
                .get_or_insert_with(&value, || (Arc::clone(&value), ())),
        )
    }
    /// Interns a borrowed tail; a hit (the common case) allocates nothing.
    fn intern_ref(&mut self, value: TailRef<'_>) -> u32 {
        interned(self.tails.get_or_insert_with(&value, || {
            let owned: Tail = (
                value.sub_ids.iter().map(|s| s.to_string()).collect(),
                value
                    .extras
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
            (Arc::new(owned), ())
        }))
    }
    fn get(&self, i: u32) -> Option<&Tail> {
        self.tails.at(i).map(|(t, ())| t.as_ref())
    }
}

/// Interns strings, looked up by `&str` so a hit allocates nothing (the click hot path).
/// A string's ID is its position in the map.
#[derive(Default)]
struct StrInterner {
    strings: ChunkedMap<Arc<str>, (), CHUNK_SID1S>,
}

impl StrInterner {
    fn intern(&mut self, value: &str) -> u32 {
        interned(
            self.strings
                .get_or_insert_with(value, || (Arc::from(value), ())),
        )
    }
}

/// The ID an interner hands out: the entry's position, or 0 (the first value interned)
/// if the interner is full. It never is: an interner holds at most one entry per record
/// applied, and four billion of them would not fit in memory.
fn interned(entry: Option<(u32, &mut ())>) -> u32 {
    entry.map_or_else(
        || {
            tracing::warn!("shard interner full: a value is read as another");
            0
        },
        |(position, _)| position,
    )
}

/// The stats key with sid1 interned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct StatKey {
    pub(super) day: u32,
    pub(super) campaign_id: u32,
    pub(super) affiliate_id: u32,
    pub(super) creative_id: Option<u32>,
    pub(super) sid1: u32,
}

impl StatKey {
    /// The key as reports and snapshots hold it, with its interned `sid1` spelled out.
    pub(super) fn to_rec(self, sid1: &str) -> StatKeyRec {
        StatKeyRec {
            day: self.day,
            campaign_id: self.campaign_id,
            affiliate_id: self.affiliate_id,
            creative_id: self.creative_id,
            sid1: sid1.to_string(),
        }
    }
}

#[derive(Default)]
pub struct ShardState {
    clicks: Chunked<ClickCore, CHUNK_CLICKS>,
    /// Click index by ID (the tag is the ID's random bits).
    by_id: ClickIndex,
    /// Latest click per (fingerprint, campaign).
    by_fingerprint: ClickIndex,
    /// The IPv6 addresses of the clicks that came from one, by click index, in click
    /// order (so a lookup is a binary search): they are the minority.
    ipv6: Chunked<(u32, Ipv6Addr), CHUNK_IPV6>,
    tails: TailInterner,
    sid1s: StrInterner,
    /// Last impression time per (fingerprint, campaign), for unique impressions.
    impressions: ChunkedMap<(u64, u32), u64, CHUNK_IMPRESSIONS>,
    pub conversions: Chunked<ConversionRec, CHUNK_CONVERSIONS>,
    /// Conversion index (into `conversions`) by conversion ID: the tag is the ID's random
    /// bits, confirmed by the stored conversion's ID, as `by_id` does for clicks.
    ///
    /// Why not a hashbrown map, as before: hashbrown grows in one step, on the shard actor
    /// that answers every request of the shard; with this map and the former per-click
    /// map it stalled the shard for 38 / 69 / 132 ms at 115 k / 229 k / 459 k conversions,
    /// holding every connection meanwhile (server-to-server p99 swung from 6 to 97 ms).
    /// A [`ClickIndex`] is 8 bytes a slot, and grows as the click indexes do.
    conversion_index: ClickIndex,
    /// The latest conversion of each click, by the click ID's tag, confirmed by the
    /// conversion's `click_id`; the click's other conversions are reached through
    /// `conversion_links`.
    ///
    /// Replaces a map from click ID to a `Vec` of conversion indexes: it stalled as
    /// `conversion_index` did, and cost about 100 bytes and one allocation per converted
    /// click.
    click_conversions: ClickIndex,
    /// Parallel to `conversions`: each click's conversions form a ring, oldest to newest,
    /// whose newest links back to the oldest. So [`ShardState::conversions_of`] starts at
    /// the newest (`click_conversions`) and walks oldest first, as the former `Vec` did
    /// (the duplicate check and the click view depend on that order), and a new
    /// conversion goes in after the newest in constant time, with no allocation. A
    /// conversion without a click holds [`NO_CLICK`].
    ///
    /// The cost: a walk reads the links one after another, where a `Vec`'s indexes could
    /// be read together. Nothing changes at one or two conversions a click (about 250 ns
    /// a lookup either way in a scratch measurement); at 38 a click a walk took 4.4-5.0 µs
    /// instead of 1.9-2.0 µs.
    conversion_links: Chunked<u32, CHUNK_CONVERSIONS>,
    counters: ChunkedMap<StatKey, CountersRec, CHUNK_COUNTERS>,
    /// Where counts go if `counters` is full, which it never is (an entry per distinct
    /// day, campaign, affiliate, creative and sub ID: four billion would not fit in
    /// memory); so that counting needs no error path.
    counters_overflow: CountersRec,
    /// Deliveries per state (pending, delivered, failed), for metrics.
    delivery_states: [u64; 3],
}

fn state_index(state: DeliveryState) -> usize {
    match state {
        DeliveryState::Pending => 0,
        DeliveryState::Delivered => 1,
        DeliveryState::Failed => 2,
    }
}

/// What a conversion adds to the counters in its current status.
pub fn conversion_counters(c: &ConversionRec) -> CountersRec {
    let mut out = CountersRec::default();
    if c.counted && c.status != ConversionStatus::Rejected {
        out.conversions = 1;
        if c.status == ConversionStatus::Approved {
            out.approved = 1;
            out.revenue_micros = c.revenue_micros;
            out.payout_micros = c.payout_micros;
        }
    }
    out
}

impl ShardState {
    /// Deliveries per state: (pending, delivered, failed).
    pub fn delivery_states(&self) -> [u64; 3] {
        self.delivery_states
    }

    fn count_delivery(&mut self, state: DeliveryState, delta: i64) {
        let slot = &mut self.delivery_states[state_index(state)];
        *slot = slot.saturating_add_signed(delta);
    }

    /// Items held: clicks, conversions and impression entries (what a snapshot writes).
    pub fn items_held(&self) -> usize {
        self.clicks.len() + self.conversions.len() + self.impressions.len()
    }

    /// Entries of the impressions' uniqueness index.
    pub fn impression_entries(&self) -> usize {
        self.impressions.len()
    }

    pub fn click_count(&self) -> usize {
        self.clicks.len()
    }

    pub fn click(&self, idx: u32) -> Option<&ClickCore> {
        self.clicks.get(idx as usize)
    }

    pub fn find_click(&self, id: &Id) -> Option<u32> {
        self.by_id.find(tag_of(id.hash64()), |i| {
            self.click(i).is_some_and(|c| c.id == *id)
        })
    }

    /// The latest click of this fingerprint on this campaign.
    pub fn latest_click(&self, fingerprint: u64, campaign_id: u32) -> Option<u32> {
        self.by_fingerprint
            .find(tag_of(fp_hash(fingerprint, campaign_id)), |i| {
                self.click(i)
                    .is_some_and(|c| c.fingerprint == fingerprint && c.campaign_id == campaign_id)
            })
    }

    /// Reads the index slots a new click (this ID, fingerprint and campaign) will probe,
    /// so that a batch can take their cache misses together (see [`ClickIndex::touch`]).
    pub fn touch_click_slots(&self, id: &Id, fingerprint: u64, campaign_id: u32) -> u64 {
        self.by_id.touch(tag_of(id.hash64()))
            ^ self
                .by_fingerprint
                .touch(tag_of(fp_hash(fingerprint, campaign_id)))
    }

    /// Whether the shard holds as many clicks as its indexes can address.
    pub fn is_full(&self) -> bool {
        self.clicks.len() > MAX_INDEX as usize
    }

    /// Whether the shard holds as many conversions as its indexes can address (about four
    /// billion, [`MAX_INDEX`]): the actor then refuses conversions as unavailable, and
    /// replay drops any beyond (with a warning), as for clicks.
    pub fn conversions_full(&self) -> bool {
        self.conversions.len() > MAX_INDEX as usize
    }

    pub fn last_impression_ms(&self, fingerprint: u64, campaign_id: u32) -> Option<u64> {
        self.impressions.get(&(fingerprint, campaign_id)).copied()
    }

    pub fn tail(&self, click: &ClickCore) -> (&[String], &[(String, String)]) {
        match self.tails.get(click.tail) {
            Some((subs, extras)) => (subs, extras),
            None => (&[], &[]),
        }
    }

    pub fn click_ip(&self, idx: u32, click: &ClickCore) -> IpAddr {
        click.ip(|| ipv6_of(&self.ipv6, idx))
    }

    /// The conversions of a click, oldest first (the order they were applied in).
    pub fn conversions_of(&self, click: &Id) -> impl Iterator<Item = &ConversionRec> {
        let newest = self
            .click_conversions
            .find(tag_of(click.hash64()), |i| self.is_conversion_of(i, click));
        // The ring goes from the newest to the oldest, then on to the newer ones.
        let mut next = newest.and_then(|i| self.conversion_link(i));
        std::iter::from_fn(move || {
            let i = next?;
            next = if Some(i) == newest {
                None
            } else {
                self.conversion_link(i)
            };
            self.conversions.get(i as usize)
        })
    }

    fn is_conversion_of(&self, idx: u32, click: &Id) -> bool {
        self.conversions
            .get(idx as usize)
            .is_some_and(|c| c.click_id == Some(click.0))
    }

    /// The next conversion in the ring of the click of conversion `idx`.
    fn conversion_link(&self, idx: u32) -> Option<u32> {
        self.conversion_links
            .get(idx as usize)
            .copied()
            .filter(|&l| l != NO_CLICK)
    }

    fn conversion_idx(&self, id: &Id) -> Option<u32> {
        self.conversion_index.find(tag_of(id.hash64()), |i| {
            self.conversions
                .get(i as usize)
                .is_some_and(|c| c.id == id.0)
        })
    }

    pub fn conversion(&self, id: &Id) -> Option<&ConversionRec> {
        self.conversions.get(self.conversion_idx(id)? as usize)
    }

    fn conversion_mut(&mut self, id: &Id) -> Option<&mut ConversionRec> {
        let i = self.conversion_idx(id)?;
        self.conversions.get_mut(i as usize)
    }

    fn stat_key(
        &mut self,
        time_ms: u64,
        campaign_id: u32,
        affiliate_id: u32,
        creative_id: Option<u32>,
        sid1: &str,
    ) -> StatKey {
        StatKey {
            day: (time_ms / MS_PER_DAY) as u32,
            campaign_id,
            affiliate_id,
            creative_id,
            sid1: self.sid1s.intern(sid1),
        }
    }

    fn counters_mut(
        &mut self,
        time_ms: u64,
        campaign_id: u32,
        affiliate_id: u32,
        creative_id: Option<u32>,
        sid1: &str,
    ) -> &mut CountersRec {
        let key = self.stat_key(time_ms, campaign_id, affiliate_id, creative_id, sid1);
        self.counter(key)
    }

    /// The counters of `key`, zero if new.
    fn counter(&mut self, key: StatKey) -> &mut CountersRec {
        match self
            .counters
            .get_or_insert_with(&key, || (key, CountersRec::default()))
        {
            Some((_, counters)) => counters,
            None => &mut self.counters_overflow,
        }
    }

    /// Applies any record (replay and live).
    pub fn apply(&mut self, record: ShardRecord) {
        match record {
            ShardRecord::Click(c) => self.apply_click(c),
            ShardRecord::Impression(i) => self.apply_impression(&i),
            ShardRecord::Conversion(c) => self.apply_conversion(c),
            ShardRecord::StatusChange {
                conversion_id,
                status,
                time_ms: _,
                audit,
                deliveries,
            } => self.apply_status(&Id(conversion_id), status, audit, deliveries),
            ShardRecord::Attempt {
                conversion_id,
                seq,
                attempt,
                state,
                next_attempt_ms,
            } => self.apply_attempt(&Id(conversion_id), seq, attempt, state, next_attempt_ms),
            ShardRecord::Replay {
                conversion_id,
                seq,
                time_ms,
            } => self.apply_replay(&Id(conversion_id), seq, time_ms),
        }
    }

    fn push_click(&mut self, snap: ClickSnap) {
        if self.is_full() {
            // Never live (the actor refuses clicks first); a log merged from several shards
            // could in theory hold more than one shard can address.
            tracing::warn!("shard full: a replayed click is dropped");
            return;
        }
        let idx = self.clicks.len() as u32;
        let mut flags = 0;
        if snap.unique {
            flags |= FLAG_UNIQUE;
        }
        if snap.creative_id.is_some() {
            flags |= FLAG_HAS_CREATIVE;
        }
        let ip4 = match snap.ip {
            IpAddr::V4(v4) => u32::from(v4),
            IpAddr::V6(v6) => {
                flags |= FLAG_IPV6;
                self.ipv6.push((idx, v6));
                0
            }
        };
        let core = ClickCore {
            id: Id(snap.id),
            time_ms: snap.time_ms,
            fingerprint: snap.fingerprint,
            campaign_id: snap.campaign_id,
            affiliate_id: snap.affiliate_id,
            creative_id: snap.creative_id.unwrap_or(0),
            tail: snap.tail,
            ip4,
            flags,
        };
        self.clicks.push(core);
        self.by_id.insert_unique(tag_of(core.id.hash64()), idx);
        // The fingerprint index keeps the latest click (by time) per (fingerprint, campaign).
        let clicks = &self.clicks;
        // The index holds only indexes of stored clicks, so `get` finds every one.
        let get = |i: u32| clicks.get(i as usize);
        let tag = tag_of(fp_hash(core.fingerprint, core.campaign_id));
        match self.by_fingerprint.probe(tag, |i| {
            get(i).is_some_and(|c| {
                c.fingerprint == core.fingerprint && c.campaign_id == core.campaign_id
            })
        }) {
            Probe::Found { pos, idx: latest } => {
                if get(latest).is_none_or(|c| c.time_ms <= core.time_ms) {
                    self.by_fingerprint.repoint(pos, idx);
                }
            }
            Probe::Vacant { pos } => self.by_fingerprint.fill(pos, tag, idx),
        }
    }

    pub fn apply_click(&mut self, c: ClickRec) {
        let sid1 = self
            .sid1s
            .intern(c.sub_ids.first().map_or("", |s| s.as_str()));
        let tail = self.tails.intern((c.sub_ids, c.extras));
        self.count_and_push(
            ClickSnap {
                id: c.id,
                time_ms: c.time_ms,
                campaign_id: c.campaign_id,
                affiliate_id: c.affiliate_id,
                creative_id: c.creative_id,
                tail,
                ip: c.ip,
                fingerprint: c.fingerprint,
                unique: c.unique,
            },
            sid1,
        );
    }

    /// Applies a click read in place from the log (recovery): the same change as
    /// [`ShardState::apply_click`] without copying its strings.
    pub fn apply_click_ref(&mut self, c: &ClickRecRef<'_>) {
        let sid1 = self.sid1s.intern(c.sub_ids.first().copied().unwrap_or(""));
        let tail = self.tails.intern_ref(TailRef {
            sub_ids: &c.sub_ids,
            extras: &c.extras,
        });
        self.count_and_push(
            ClickSnap {
                id: c.id,
                time_ms: c.time_ms,
                campaign_id: c.campaign_id,
                affiliate_id: c.affiliate_id,
                creative_id: c.creative_id,
                tail,
                ip: c.ip,
                fingerprint: c.fingerprint,
                unique: c.unique,
            },
            sid1,
        );
    }

    /// Counts a click (its strings already interned) and stores it.
    fn count_and_push(&mut self, click: ClickSnap, sid1: u32) {
        let key = StatKey {
            day: (click.time_ms / MS_PER_DAY) as u32,
            campaign_id: click.campaign_id,
            affiliate_id: click.affiliate_id,
            creative_id: click.creative_id,
            sid1,
        };
        let counters = self.counter(key);
        counters.clicks += 1;
        counters.unique_clicks += u64::from(click.unique);
        self.push_click(click);
    }

    /// Makes room for `clicks` more clicks in the click indexes (recovery knows how many
    /// it will replay), so they are not rehashed as they grow.
    pub fn reserve_clicks(&mut self, clicks: usize) {
        self.by_id.reserve(clicks);
        self.by_fingerprint.reserve(clicks);
    }

    pub fn apply_impression(&mut self, i: &ImpressionRec) {
        let counters = self.counters_mut(
            i.time_ms,
            i.campaign_id,
            i.affiliate_id,
            i.creative_id,
            &i.sid1,
        );
        counters.impressions += 1;
        counters.unique_impressions += u64::from(i.unique);
        let key = (i.fingerprint, i.campaign_id);
        // Full (never, see `counters_overflow`): the impression is counted, not remembered.
        if let Some((_, last)) = self.impressions.get_or_insert_with(&key, || (key, 0)) {
            *last = (*last).max(i.time_ms);
        }
    }

    pub fn apply_conversion(&mut self, c: ConversionRec) {
        let add = conversion_counters(&c);
        let key = self.stat_key(
            c.time_ms,
            c.campaign_id,
            c.affiliate_id,
            c.creative_id,
            c.sub_ids.first().map_or("", String::as_str),
        );
        if self.push_conversion(c) {
            self.counter(key).add(&add);
        }
    }

    /// Stores a conversion, counts its deliveries and indexes it (by its ID, and in its
    /// click's ring): replay and a snapshot's rebuild both add conversions here, so both
    /// build the same indexes. False (and nothing stored) when the shard is full.
    fn push_conversion(&mut self, c: ConversionRec) -> bool {
        if self.conversions_full() {
            // Never live (the actor refuses conversions first); a log merged from several
            // shards could in theory hold more than one shard can address.
            tracing::warn!("shard full: a replayed conversion is dropped");
            return false;
        }
        for d in &c.deliveries {
            self.count_delivery(d.state, 1);
        }
        let idx = self.conversions.len() as u32;
        let conversions = &self.conversions;
        // The indexes hold only indexes of stored conversions, so `get` finds every one.
        let get = |i: u32| conversions.get(i as usize);
        // IDs are minted unique; should a log hold one twice, the later is found by ID (as
        // the former map kept the later), and both stay in their click's ring.
        let tag = tag_of(Id(c.id).hash64());
        match self
            .conversion_index
            .probe(tag, |i| get(i).is_some_and(|x| x.id == c.id))
        {
            Probe::Found { pos, .. } => self.conversion_index.repoint(pos, idx),
            Probe::Vacant { pos } => self.conversion_index.fill(pos, tag, idx),
        }
        let link = match c.click_id {
            None => NO_CLICK,
            Some(click) => {
                let tag = tag_of(Id(click).hash64());
                match self
                    .click_conversions
                    .probe(tag, |i| get(i).is_some_and(|x| x.click_id == Some(click)))
                {
                    Probe::Found { pos, idx: newest } => {
                        self.click_conversions.repoint(pos, idx);
                        // In after the newest: it links to the new one, which links to
                        // the oldest.
                        match self.conversion_links.get_mut(newest as usize) {
                            Some(link) => std::mem::replace(link, idx),
                            None => idx,
                        }
                    }
                    Probe::Vacant { pos } => {
                        self.click_conversions.fill(pos, tag, idx);
                        // A ring of one.
                        idx
                    }
                }
            }
        };
        self.conversion_links.push(link);
        self.conversions.push(c);
        true
    }

    fn apply_status(
        &mut self,
        id: &Id,
        status: ConversionStatus,
        audit: String,
        deliveries: Vec<DeliveryRec>,
    ) {
        for d in &deliveries {
            self.count_delivery(d.state, 1);
        }
        let Some(c) = self.conversion_mut(id) else {
            return;
        };
        let before = conversion_counters(c);
        c.status = status;
        // A status change is rare: the audit is boxed again one line longer.
        let mut lines = std::mem::take(&mut c.audit).into_vec();
        lines.push(crate::codec::AuditLine::from(audit));
        c.audit = lines.into_boxed_slice();
        c.deliveries.extend(deliveries);
        let after = conversion_counters(c);
        let (time_ms, campaign, affiliate, creative) =
            (c.time_ms, c.campaign_id, c.affiliate_id, c.creative_id);
        let sid1 = c.sub_ids.first().cloned().unwrap_or_default();
        let counters = self.counters_mut(time_ms, campaign, affiliate, creative, &sid1);
        counters.sub_conversions(&before);
        counters.add(&after);
    }

    pub fn delivery_mut(&mut self, id: &Id, seq: u32) -> Option<&mut DeliveryRec> {
        self.conversion_mut(id)?
            .deliveries
            .iter_mut()
            .find(|d| d.seq == seq)
    }

    fn apply_attempt(
        &mut self,
        id: &Id,
        seq: u32,
        attempt: AttemptRec,
        state: DeliveryState,
        next_attempt_ms: u64,
    ) {
        if let Some(d) = self.delivery_mut(id, seq) {
            d.attempts_made += 1;
            d.attempts.push(attempt);
            let old = std::mem::replace(&mut d.state, state);
            d.next_attempt_ms = next_attempt_ms;
            self.count_delivery(old, -1);
            self.count_delivery(state, 1);
        }
    }

    fn apply_replay(&mut self, id: &Id, seq: u32, time_ms: u64) {
        if let Some(d) = self.delivery_mut(id, seq) {
            let old = std::mem::replace(&mut d.state, DeliveryState::Pending);
            d.attempts_made = 0;
            d.next_attempt_ms = time_ms;
            self.count_delivery(old, -1);
            self.count_delivery(DeliveryState::Pending, 1);
        }
    }

    /// The report counters as they are now, sharing their chunks (see [`FrozenCounters`]).
    pub fn freeze_counters(&self) -> FrozenCounters {
        FrozenCounters {
            counters: self.counters.share_entries(),
            sid1s: self.sid1s.strings.share_entries(),
        }
    }

    /// The whole state, for a snapshot. Clicks older than `keep_clicks_since_ms` and
    /// impression entries for which `keep_impression` says no are left out.
    ///
    /// `keep_conversion` is asked about each conversion with whether its click is kept.
    pub fn to_snapshot(
        &self,
        keep_clicks_since_ms: u64,
        keep_impression: impl Fn(u32, u64) -> bool,
        keep_conversion: impl Fn(&ConversionRec, bool) -> bool,
    ) -> ShardSnapshot {
        self.freeze().to_snapshot(Retention {
            keep_clicks_since_ms,
            keep_impression,
            keep_conversion,
        })
    }

    /// About how many clicks (older than `keep_clicks_since_ms`) and conversions (older
    /// than `keep_conversions_since_ms`) are past their retention, in a few probes: both
    /// stores are in time order, as they were applied (give or take a clock step back).
    /// Conversions count whether or not something else keeps them (their click, a pending
    /// delivery), so this is an upper bound of what a compaction would drop.
    pub fn expired_items(
        &self,
        keep_clicks_since_ms: u64,
        keep_conversions_since_ms: u64,
    ) -> usize {
        self.clicks
            .partition_point(|c| c.time_ms < keep_clicks_since_ms)
            + self
                .conversions
                .partition_point(|c| c.time_ms < keep_conversions_since_ms)
    }

    /// The state as it is now, for a snapshot built elsewhere (see [`Frozen`]): shares
    /// every store and table chunk by chunk, copying none.
    pub fn freeze(&self) -> Frozen {
        Frozen {
            clicks: self.clicks.share(),
            ipv6: self.ipv6.share(),
            tails: self.tails.tails.share_entries(),
            conversions: self.conversions.share(),
            impressions: self.impressions.share_entries(),
            counters: self.freeze_counters(),
        }
    }

    /// Rebuilds a state from a snapshot.
    pub fn from_snapshot(s: ShardSnapshot) -> ShardState {
        let mut state = ShardState::default();
        let mut tail_map = Vec::with_capacity(s.tails.len());
        for t in s.tails {
            tail_map.push(state.tails.intern(t));
        }
        state.reserve_clicks(s.clicks.len());
        for mut c in s.clicks {
            c.tail = tail_map.get(c.tail as usize).copied().unwrap_or(0);
            state.push_click(c);
        }
        state.conversion_index.reserve(s.conversions.len());
        // At most one entry per conversion with a click (one per click in fact).
        let with_click = s.conversions.iter().filter(|c| c.click_id.is_some());
        state.click_conversions.reserve(with_click.count());
        for c in s.conversions {
            state.push_conversion(c);
        }
        state.impressions.reserve(s.impressions.len());
        for (fp, campaign, t) in s.impressions {
            let key = (fp, campaign);
            if let Some((_, last)) = state.impressions.get_or_insert_with(&key, || (key, 0)) {
                *last = (*last).max(t);
            }
        }
        for (k, c) in s.counters {
            let key = state.stat_key(
                u64::from(k.day) * MS_PER_DAY,
                k.campaign_id,
                k.affiliate_id,
                k.creative_id,
                &k.sid1,
            );
            state.counter(key).add(&c);
        }
        state
    }

    /// Bytes of heap memory this state holds for clicks and their indexes (not counting
    /// conversions and counters), for the memory figure.
    pub fn click_memory_bytes(&self) -> usize {
        self.clicks.allocation_bytes()
            + self.by_id.allocation_size()
            + self.by_fingerprint.allocation_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;

    use crate::test_seed::seed;

    /// What the click indexes must answer, kept the simple way.
    #[derive(Default)]
    struct Model {
        by_id: HashMap<Id, u32>,
        /// (fingerprint, campaign) -> (time, index) of the latest click (ties: the later).
        latest: HashMap<(u64, u32), (u64, u32)>,
    }

    /// Both indexes against the model, and every answer of one state equal to another's
    /// (a snapshot's rebuild).
    fn check_indexes(state: &ShardState, model: &Model, absent: &[Id], at: &str) {
        for (id, &idx) in &model.by_id {
            assert_eq!(state.find_click(id), Some(idx), "{at}: click {id}");
        }
        for id in absent.iter().filter(|id| !model.by_id.contains_key(id)) {
            assert_eq!(state.find_click(id), None, "{at}: absent {id}");
        }
        for (&(fp, campaign), &(_, idx)) in &model.latest {
            assert_eq!(
                state.latest_click(fp, campaign),
                Some(idx),
                "{at}: latest of ({fp}, {campaign})"
            );
        }
    }

    /// The click indexes (whose entries carry hash bits, see the `index` module) find every click by
    /// its ID and the latest click per (fingerprint, campaign) while they grow, including
    /// keys whose hash bits collide (IDs equal in all their hashed bytes; fingerprints whose
    /// `fp_hash` is equal on two campaigns), and the same after a snapshot round trip.
    #[test]
    fn click_indexes_agree_with_a_model_across_growth_and_snapshots() {
        let seed = seed();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut state = ShardState::default();
        let mut model = Model::default();
        let mut absent = Vec::new();
        // Fingerprints, each with a twin that has the same `fp_hash` on campaign 2 as the
        // original on campaign 1.
        let twin = |fp: u64| fp ^ fp_hash(0, 1) ^ fp_hash(0, 2);
        let fps: Vec<u64> = (0..300)
            .map(|_| rng.random::<u64>())
            .flat_map(|fp| [fp, twin(fp)])
            .collect();
        let subs = ["", "a", "b", "sub-3"];
        let mut last_id = Id([0; 16]);
        for i in 0..20_000u32 {
            let mut id = Id(rng.random());
            if rng.random_bool(0.2) {
                // Same hashed bytes as the previous click, another ID.
                id = last_id;
                id.0[15] ^= 1 + rng.random_range(0..255u8);
            }
            if model.by_id.contains_key(&id) {
                continue;
            }
            let mut sibling = id;
            sibling.0[15] = sibling.0[15].wrapping_add(128);
            absent.push(sibling);
            last_id = id;
            let fingerprint = fps[rng.random_range(0..fps.len())];
            let campaign_id = rng.random_range(1..=2u32);
            // Times go back now and then: the index keeps the latest by time.
            let time_ms = 1_000_000 + u64::from(i) * 10 - rng.random_range(0..50);
            let idx = state.click_count() as u32;
            state.apply_click(ClickRec {
                id: id.0,
                time_ms,
                campaign_id,
                affiliate_id: 7,
                creative_id: None,
                sub_ids: vec![subs[i as usize % subs.len()].to_string()],
                extras: Vec::new(),
                ip: IpAddr::V4(Ipv4Addr::from(i)),
                fingerprint,
                unique: true,
            });
            model.by_id.insert(id, idx);
            let latest = model
                .latest
                .entry((fingerprint, campaign_id))
                .or_insert((time_ms, idx));
            if latest.0 <= time_ms {
                *latest = (time_ms, idx);
            }
            if i % 4_999 == 0 {
                check_indexes(&state, &model, &absent, &format!("seed {seed}, click {i}"));
            }
        }
        check_indexes(&state, &model, &absent, &format!("seed {seed}, all"));
        let rebuilt = ShardState::from_snapshot(state.to_snapshot(0, |_, _| true, |_, _| true));
        check_indexes(&rebuilt, &model, &absent, &format!("seed {seed}, rebuilt"));
        for idx in 0..state.click_count() as u32 {
            let (a, b) = (state.click(idx), rebuilt.click(idx));
            let (a, b) = (a.expect("click"), b.expect("rebuilt click"));
            assert_eq!(
                (a.id, a.time_ms, a.fingerprint, state.tail(a)),
                (b.id, b.time_ms, b.fingerprint, rebuilt.tail(b)),
                "seed {seed}: click {idx} rebuilt"
            );
        }
    }

    /// A conversion as the conversion-index test makes it: only the ID, the click and
    /// the time matter there.
    fn conversion_rec(id: Id, click: Option<Id>, time_ms: u64) -> ConversionRec {
        ConversionRec {
            id: id.0,
            time_ms,
            click_id: click.map(|c| c.0),
            campaign_id: 1,
            affiliate_id: 2,
            creative_id: None,
            sub_ids: Box::default(),
            extras: Box::default(),
            event: "sale".into(),
            merchant_ref: None,
            status: ConversionStatus::Approved,
            payout_micros: 1,
            revenue_micros: 2,
            currency: "USD".into(),
            matched_by: crate::codec::MatchedBy::ClickId,
            pixel_type: crate::api::PixelType::S2s,
            counted: true,
            duplicate_of: None,
            audit: Box::default(),
            deliveries: Vec::new(),
        }
    }

    /// A conversion of the model: its ID, click and time (the time tells apart two
    /// conversions of one ID).
    type ModelConversion = (Id, Option<Id>, u64);

    /// `conversion` and `conversions_of` against the conversions applied, in order: the
    /// latest conversion of an ID, and a click's conversions oldest first.
    fn check_conversions(state: &ShardState, model: &[ModelConversion], keys: &Keys, at: &str) {
        // Conversion ID -> its latest time; click -> its conversions' IDs.
        let mut latest: HashMap<Id, u64> = HashMap::new();
        let mut of_click: HashMap<Id, Vec<[u8; 16]>> = HashMap::new();
        for &(id, click, time_ms) in model {
            latest.insert(id, time_ms);
            if let Some(click) = click {
                of_click.entry(click).or_default().push(id.0);
            }
        }
        for id in &keys.conversions {
            let want = latest.get(id).map(|&time_ms| (id.0, time_ms));
            let got = state.conversion(id).map(|c| (c.id, c.time_ms));
            assert_eq!(got, want, "{at}: conversion {id}");
        }
        for click in &keys.clicks {
            let want = of_click.remove(click).unwrap_or_default();
            let got: Vec<[u8; 16]> = state.conversions_of(click).map(|c| c.id).collect();
            assert_eq!(got, want, "{at}: conversions of {click}");
        }
    }

    /// Every key the conversion-index test asks about, applied or not.
    struct Keys {
        conversions: Vec<Id>,
        clicks: Vec<Id>,
    }

    /// An ID equal to `id` in the bytes `Id::hash64` reads (so its tag is the same), but
    /// another ID.
    fn hash_twin(id: Id) -> Id {
        let mut twin = id;
        twin.0[15] ^= 0x80;
        twin
    }

    /// The conversion indexes (by ID, and each click's ring of conversions) find every
    /// conversion by its ID and a click's conversions oldest first while they grow,
    /// including IDs and click IDs whose tags collide, conversions without a click and a
    /// conversion ID applied twice; the same after a snapshot round trip, and after one
    /// that leaves some conversions out.
    #[test]
    fn conversion_indexes_agree_with_a_model_across_growth_and_snapshots() {
        let seed = seed();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut state = ShardState::default();
        // A few clicks (several conversions each), half of them hash twins of the others.
        let clicks: Vec<Id> = (0..20)
            .map(|_| Id(rng.random()))
            .flat_map(|id| [id, hash_twin(id)])
            .collect();
        let mut keys = Keys {
            conversions: Vec::new(),
            // A click never converted too.
            clicks: clicks.iter().copied().chain([Id(rng.random())]).collect(),
        };
        let mut model: Vec<ModelConversion> = Vec::new();
        for i in 0..3_000u64 {
            let id = match model.last() {
                // The twin of the previous conversion's ID, now and then.
                Some(&(last, _, _)) if rng.random_bool(0.2) => hash_twin(last),
                // An ID applied before (never live: IDs are minted unique), rarely.
                Some(_) if rng.random_bool(0.01) => model[rng.random_range(0..model.len())].0,
                _ => Id(rng.random()),
            };
            let click = rng
                .random_bool(0.8)
                .then(|| clicks[rng.random_range(0..clicks.len())]);
            state.apply_conversion(conversion_rec(id, click, 1_000 + i));
            model.push((id, click, 1_000 + i));
            keys.conversions.push(id);
            keys.conversions.push(hash_twin(id));
            if i % 997 == 0 {
                check_conversions(&state, &model, &keys, &format!("seed {seed}, step {i}"));
            }
        }
        check_conversions(&state, &model, &keys, &format!("seed {seed}, all"));
        let rebuilt = ShardState::from_snapshot(state.to_snapshot(0, |_, _| true, |_, _| true));
        check_conversions(&rebuilt, &model, &keys, &format!("seed {seed}, rebuilt"));
        // A snapshot that keeps two conversions in three.
        let kept = |c: &ConversionRec| !c.time_ms.is_multiple_of(3);
        let model: Vec<ModelConversion> = model
            .into_iter()
            .filter(|&(_, _, time_ms)| !time_ms.is_multiple_of(3))
            .collect();
        let thinned = ShardState::from_snapshot(state.to_snapshot(0, |_, _| true, |c, _| kept(c)));
        check_conversions(&thinned, &model, &keys, &format!("seed {seed}, thinned"));
    }

    /// A snapshot keeps the tails its kept clicks use, once each, in order of first use,
    /// whatever order the shard interned them in.
    #[test]
    fn snapshots_keep_the_tails_of_kept_clicks_once() {
        let mut state = ShardState::default();
        for (i, (time_ms, sub)) in [(1, "old"), (5, "b"), (6, "a"), (7, "b"), (8, "")]
            .into_iter()
            .enumerate()
        {
            state.apply_click(ClickRec {
                id: [i as u8 + 1; 16],
                time_ms,
                campaign_id: 1,
                affiliate_id: 1,
                creative_id: None,
                sub_ids: vec![sub.to_string()],
                extras: vec![("k".into(), sub.to_string())],
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                fingerprint: i as u64,
                unique: true,
            });
        }
        let snap = state.to_snapshot(5, |_, _| true, |_, _| true);
        let tail = |s: &str| -> Tail { (vec![s.to_string()], vec![("k".into(), s.into())]) };
        assert_eq!(snap.tails, vec![tail("b"), tail("a"), tail("")]);
        assert_eq!(
            snap.clicks.iter().map(|c| c.tail).collect::<Vec<_>>(),
            vec![0, 1, 0, 2]
        );
    }

    /// A borrowed tail finds the owned one it equals (same hash, same equality), and only
    /// that one: recovery's in-place path must intern exactly as the live path does.
    #[test]
    fn borrowed_tails_intern_like_owned_ones() {
        let mut tails = TailInterner::default();
        let owned = |subs: &[&str], extras: &[(&str, &str)]| -> Tail {
            (
                subs.iter().map(|s| s.to_string()).collect(),
                extras
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            (&[], &[]),
            (&["a"], &[]),
            (&["a", "b"], &[]),
            (&["ab"], &[]),
            (&["a"], &[("k", "v")]),
            (&[], &[("k", "v"), ("k2", "")]),
        ];
        let indexes: Vec<u32> = cases
            .iter()
            .map(|(s, e)| tails.intern(owned(s, e)))
            .collect();
        for ((subs, extras), &want) in cases.iter().zip(&indexes) {
            let got = tails.intern_ref(TailRef {
                sub_ids: subs,
                extras,
            });
            assert_eq!(got, want, "{subs:?} {extras:?}");
        }
        let new = tails.intern_ref(TailRef {
            sub_ids: &["b", "a"],
            extras: &[],
        });
        assert_eq!(new as usize, cases.len(), "a new tail gets a new index");
        assert_eq!(
            tails.get(new),
            Some(&owned(&["b", "a"], &[])),
            "stored owned"
        );
    }
}
