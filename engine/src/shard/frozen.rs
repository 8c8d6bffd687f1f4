//! A shard's state frozen for a snapshot: what the snapshot needs of it, taken on the
//! shard's task at the snapshot's LSN, then turned into a [`ShardSnapshot`] and encoded
//! on the snapshot's own thread while the shard goes on.
//!
//! Why: building and encoding the snapshot on the shard's task held every answer of the
//! shard for as long as it took, 281 + 249 ms for a shard of a million clicks (measured
//! on the CI machine under load), which was the worst tail latency the HTTP benchmark
//! saw. Freezing shares the click and conversion stores chunk by chunk (copy on write,
//! see [`Chunked::share`]), and so are the side tables: the interned tails and sub IDs, the
//! IPv6 addresses, the impressions' uniqueness entries and the counters (see
//! [`super::chunked_map`]). Freezing copies nothing but a reference count per chunk.

use super::chunked::Chunked;
use super::state::{
    ClickCore, StatKey, CHUNK_CLICKS, CHUNK_CONVERSIONS, CHUNK_COUNTERS, CHUNK_IMPRESSIONS,
    CHUNK_IPV6, CHUNK_SID1S, CHUNK_TAILS,
};
use super::ConversionFilter;
use crate::api::{DeliveryState, GroupKey};
use crate::codec::{
    write_shard_snapshot_parts, ClickSnap, ConversionRec, CountersRec, ShardSnapshot, StatKeyRec,
    Tail,
};
use crate::ids::Id;
use crate::stats::GroupTuple;
use crate::view::{ConversionView, DeliveryView};
use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::Arc;

/// The tail of a click whose tail is missing (never: every click's tail is interned).
static NO_TAIL: Tail = (Vec::new(), Vec::new());

/// What to leave out of a snapshot: the shard's retention rules at the moment it was
/// taken.
pub struct Retention<KeepImpression, KeepConversion> {
    /// Clicks older than this (ms) are left out.
    pub keep_clicks_since_ms: u64,
    /// Whether an impression entry (campaign, time) stays.
    pub keep_impression: KeepImpression,
    /// Whether a conversion stays, given whether its click stays.
    pub keep_conversion: KeepConversion,
}

/// A [`ShardSnapshot`] whose tails and conversions are borrowed from the frozen state.
pub struct SnapshotParts<'a> {
    pub clicks: Vec<ClickSnap>,
    pub tails: Vec<&'a Tail>,
    pub conversions: Vec<&'a ConversionRec>,
    pub impressions: Vec<(u64, u32, u64)>,
    pub counters: Vec<(StatKeyRec, CountersRec)>,
}

impl SnapshotParts<'_> {
    /// The snapshot's bytes, as [`crate::codec::encode_shard_snapshot`] gives them for
    /// [`SnapshotParts::into_owned`], into a writer a chunk at a time (see
    /// [`write_shard_snapshot_parts`]).
    pub fn encode_into(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        write_shard_snapshot_parts(
            out,
            &self.clicks,
            &self.tails,
            &self.conversions,
            &self.impressions,
            &self.counters,
        )
    }

    /// The snapshot with its conversions copied out (to rebuild a state from).
    pub fn into_owned(self) -> ShardSnapshot {
        ShardSnapshot {
            clicks: self.clicks,
            tails: self.tails.into_iter().cloned().collect(),
            conversions: self.conversions.into_iter().cloned().collect(),
            impressions: self.impressions,
            counters: self.counters,
        }
    }
}

pub struct Frozen {
    pub(super) clicks: Chunked<ClickCore, CHUNK_CLICKS>,
    /// (click index, address), in click order.
    pub(super) ipv6: Chunked<(u32, Ipv6Addr), CHUNK_IPV6>,
    /// By interned ID (the position).
    pub(super) tails: Chunked<(Arc<Tail>, ()), CHUNK_TAILS>,
    pub(super) conversions: Chunked<ConversionRec, CHUNK_CONVERSIONS>,
    pub(super) impressions: Chunked<((u64, u32), u64), CHUNK_IMPRESSIONS>,
    pub(super) counters: FrozenCounters,
}

/// A shard's conversions as they were at one moment: the admin API lists conversions and
/// deliveries from them off the actor (see [`crate::background::run`]). Either list reads
/// every conversion of the shard, and on the actor that held every request of the shard
/// for as long as it took: a page of 100 conversions sorted all that matched (hundreds
/// of thousands of references) to keep the first 100.
pub struct FrozenConversions(pub(super) Chunked<ConversionRec, CHUNK_CONVERSIONS>);

impl FrozenConversions {
    /// The first `filter.limit` conversions that `filter` lets through, in (time, ID)
    /// order.
    pub fn conversions(&self, filter: &ConversionFilter) -> Vec<(u64, Id, ConversionView)> {
        let f = filter;
        let hits = self.0.iter().filter(|c| {
            c.time_ms >= f.from_ms
                && c.time_ms <= f.to_ms
                && f.campaign_id.is_none_or(|id| id == c.campaign_id)
                && f.affiliate_id.is_none_or(|id| id == c.affiliate_id)
                && f.status.is_none_or(|s| s == c.status)
                && f.after.is_none_or(|after| (c.time_ms, Id(c.id)) > after)
        });
        first_by_key(hits, f.limit, |c| (c.time_ms, Id(c.id)))
            .into_iter()
            .map(|c| (c.time_ms, Id(c.id), crate::view::conversion_view(c)))
            .collect()
    }

    /// The first `limit` deliveries in `state` (any state if `None`), in (creation time,
    /// conversion ID, sequence) order.
    pub fn deliveries(
        &self,
        state: Option<DeliveryState>,
        limit: usize,
    ) -> Vec<(u64, DeliveryView)> {
        let hits = self.0.iter().flat_map(|c| {
            c.deliveries
                .iter()
                .filter(move |d| state.is_none_or(|s| s == d.state))
                .map(move |d| (c, d))
        });
        first_by_key(hits, limit, |(c, d)| (d.created_ms, Id(c.id), d.seq))
            .into_iter()
            .map(|(c, d)| (d.created_ms, crate::view::delivery_view(c, d)))
            .collect()
    }
}

/// The `limit` smallest items by `key`, in key order: a heap of at most `limit + 1` items
/// rather than sorting every item (a shard may hold millions; a page is at most a
/// thousand).
fn first_by_key<T, K: Ord>(
    items: impl Iterator<Item = T>,
    limit: usize,
    key: impl Fn(&T) -> K,
) -> Vec<T> {
    /// Ordered by key alone.
    struct Keyed<K, T>(K, T);
    impl<K: Ord, T> PartialEq for Keyed<K, T> {
        fn eq(&self, other: &Self) -> bool {
            self.0 == other.0
        }
    }
    impl<K: Ord, T> Eq for Keyed<K, T> {}
    impl<K: Ord, T> PartialOrd for Keyed<K, T> {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl<K: Ord, T> Ord for Keyed<K, T> {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            self.0.cmp(&other.0)
        }
    }
    // A max-heap: its top is the largest kept, the first to go when a smaller one comes.
    let mut kept = std::collections::BinaryHeap::new();
    for item in items {
        kept.push(Keyed(key(&item), item));
        if kept.len() > limit {
            kept.pop();
        }
    }
    kept.into_sorted_vec()
        .into_iter()
        .map(|Keyed(_, item)| item)
        .collect()
}

/// A shard's report counters as they were at one moment: a report groups them off the
/// actor (see [`crate::background::run`]). With a sub ID of its own per click there is a
/// counter per click, and grouping 1.3 M of them held the actor, and every request of the
/// shard, for about 60 ms per report (group by day and campaign, one shard pinned, 66 k
/// clicks/s meanwhile).
pub struct FrozenCounters {
    pub(super) counters: Chunked<(StatKey, CountersRec), CHUNK_COUNTERS>,
    /// The interned first sub IDs the keys name, by interned ID (the position).
    pub(super) sid1s: Chunked<(Arc<str>, ()), CHUNK_SID1S>,
}

impl FrozenCounters {
    /// The counters in `[from_day, to_day]`, grouped by `group_by`; `None` as soon as
    /// there are more than `max_groups` groups (the report would be refused anyway, and
    /// its groups are bounded in memory so).
    pub fn report(
        &self,
        from_day: u32,
        to_day: u32,
        group_by: &[GroupKey],
        max_groups: usize,
    ) -> Option<HashMap<GroupTuple, CountersRec>> {
        let mut out: HashMap<GroupTuple, CountersRec> = HashMap::new();
        for (key, counters) in self.counters.iter() {
            if key.day < from_day || key.day > to_day {
                continue;
            }
            out.entry(GroupTuple::of(&self.key_rec(key), group_by))
                .or_default()
                .add(counters);
            if out.len() > max_groups {
                return None;
            }
        }
        Some(out)
    }

    /// Every counter with its key spelled out.
    pub(super) fn records(&self) -> impl Iterator<Item = (StatKeyRec, CountersRec)> + '_ {
        self.counters.iter().map(|(k, c)| (self.key_rec(k), *c))
    }

    fn key_rec(&self, key: &StatKey) -> StatKeyRec {
        key.to_rec(
            self.sid1s
                .get(key.sid1 as usize)
                .map_or("", |(s, ())| s.as_ref()),
        )
    }
}

impl Frozen {
    /// The snapshot of this state, without what `retention` leaves out.
    pub fn to_snapshot(
        &self,
        retention: Retention<impl Fn(u32, u64) -> bool, impl Fn(&ConversionRec, bool) -> bool>,
    ) -> ShardSnapshot {
        self.snapshot_parts(retention).into_owned()
    }

    /// [`Frozen::to_snapshot`] with the conversions borrowed from this state, to encode
    /// without copying them (see [`SnapshotParts::encode`]).
    pub fn snapshot_parts<'s>(
        &'s self,
        retention: Retention<impl Fn(u32, u64) -> bool, impl Fn(&ConversionRec, bool) -> bool>,
    ) -> SnapshotParts<'s> {
        let Retention {
            keep_clicks_since_ms,
            keep_impression,
            keep_conversion,
        } = retention;
        // The shard's tails are distinct already: the snapshot keeps those its clicks use,
        // numbered in order of first use, mapped by index (no tail is hashed or copied
        // per click; with a sub ID of its own per click, copying them doubled the heap
        // while a snapshot was built).
        let mut tails: Vec<&'s Tail> = Vec::new();
        let mut tail_map: Vec<Option<u32>> = vec![None; self.tails.len()];
        let mut missing_tail = None;
        let mut clicks = Vec::with_capacity(self.clicks.len());
        // The IPv6 addresses come in click order: read alongside the clicks.
        let mut ipv6 = self.ipv6.iter().peekable();
        // Which clicks the conversions point at are kept: filled in the same pass. With
        // hashbrown's hasher, not std's SipHash: the IDs are random bits the server minted,
        // and for 500 k conversions over 1 M clicks building and probing this map took
        // 205-230 ms with SipHash, 55 ms without (a scratch program, three rounds).
        let mut converted_click_kept: hashbrown::HashMap<[u8; 16], bool> = self
            .conversions
            .iter()
            .filter_map(|c| c.click_id)
            .map(|id| (id, false))
            .collect();
        for (i, c) in self.clicks.iter().enumerate() {
            if c.time_ms < keep_clicks_since_ms {
                continue;
            }
            if let Some(kept) = converted_click_kept.get_mut(&c.id.0) {
                *kept = true;
            }
            let mut snap_tail = |tail: &'s Tail| {
                let index = tails.len() as u32;
                tails.push(tail);
                index
            };
            let tail = match tail_map.get_mut(c.tail as usize) {
                Some(Some(index)) => *index,
                Some(slot) => *slot.insert(snap_tail(
                    self.tails
                        .get(c.tail as usize)
                        .map_or(&NO_TAIL, |(t, ())| t.as_ref()),
                )),
                // Not a tail of this shard (never happens: every click's tail is interned);
                // it reads as empty, as `ShardState::tail` shows it.
                None => *missing_tail.get_or_insert_with(|| snap_tail(&NO_TAIL)),
            };
            clicks.push(ClickSnap {
                id: c.id.0,
                time_ms: c.time_ms,
                campaign_id: c.campaign_id,
                affiliate_id: c.affiliate_id,
                creative_id: c.creative_id(),
                tail,
                ip: c.ip(|| {
                    let i = i as u32;
                    while ipv6.next_if(|&&(click, _)| click < i).is_some() {}
                    ipv6.next_if(|&&(click, _)| click == i).map(|&(_, a)| a)
                }),
                fingerprint: c.fingerprint,
                unique: c.unique(),
            });
        }
        let mut counters: Vec<(StatKeyRec, CountersRec)> = self.counters.records().collect();
        counters.sort_by(|a, b| a.0.cmp(&b.0));
        let mut impressions: Vec<(u64, u32, u64)> = self
            .impressions
            .iter()
            .filter(|&&((_, campaign), t)| keep_impression(campaign, t))
            .map(|&((fp, campaign), t)| (fp, campaign, t))
            .collect();
        impressions.sort_unstable();
        let conversions = self
            .conversions
            .iter()
            .filter(|c| {
                let click_kept = c
                    .click_id
                    .is_some_and(|id| converted_click_kept.get(&id) == Some(&true));
                keep_conversion(c, click_kept)
            })
            .collect();
        SnapshotParts {
            clicks,
            tails,
            conversions,
            impressions,
            counters,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::ShardState;
    use super::Retention;
    use crate::api::PixelType;
    use crate::codec::{
        encode_shard_snapshot, ClickRec, ConversionRec, ImpressionRec, MatchedBy, ShardRecord,
    };
    use crate::config::ConversionStatus;
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn click(rng: &mut impl Rng, time_ms: u64) -> ShardRecord {
        let ip = if rng.random_bool(0.2) {
            IpAddr::V6(Ipv6Addr::from(rng.random::<u128>()))
        } else {
            IpAddr::V4(Ipv4Addr::from(rng.random::<u32>()))
        };
        ShardRecord::Click(ClickRec {
            id: rng.random(),
            time_ms,
            campaign_id: rng.random_range(1..=3),
            affiliate_id: 7,
            creative_id: rng.random_bool(0.5).then_some(4),
            sub_ids: vec![format!("s{}", rng.random_range(0..5))],
            extras: Vec::new(),
            ip,
            fingerprint: rng.random(),
            unique: rng.random_bool(0.5),
        })
    }

    fn conversion(rng: &mut impl Rng, time_ms: u64, click_id: Option<[u8; 16]>) -> ShardRecord {
        ShardRecord::Conversion(ConversionRec {
            id: rng.random(),
            time_ms,
            click_id,
            campaign_id: 1,
            affiliate_id: 7,
            creative_id: None,
            sub_ids: Box::new(["s1".to_string()]),
            extras: Box::default(),
            event: "sale".into(),
            merchant_ref: None,
            status: ConversionStatus::Approved,
            payout_micros: 1_000_000,
            revenue_micros: 2_000_000,
            currency: "USD".into(),
            matched_by: MatchedBy::ClickId,
            pixel_type: PixelType::S2s,
            counted: true,
            duplicate_of: None,
            audit: Box::new([crate::codec::AuditLine::from("recorded")]),
            deliveries: Vec::new(),
        })
    }

    fn impression(rng: &mut impl Rng, time_ms: u64) -> ShardRecord {
        ShardRecord::Impression(ImpressionRec {
            time_ms,
            campaign_id: rng.random_range(1..=3),
            affiliate_id: 7,
            creative_id: None,
            sid1: "s1".into(),
            fingerprint: rng.random_range(0..500),
            unique: true,
        })
    }

    /// Keeps clicks from time 1 000 on, impressions of campaigns 1 and 2, and conversions
    /// whose click is kept or that are from time 1 500 on.
    /// A state of `records` records, one in ten a conversion (most of a click seen
    /// before), one an impression, the rest clicks, record `i` at `i / records_per_ms`
    /// ms; with the IDs of its clicks and conversions.
    fn random_state(rng: &mut impl Rng, records: u64, records_per_ms: u64) -> RandomState {
        let mut state = ShardState::default();
        let (mut click_ids, mut conversion_ids) = (Vec::new(), Vec::new());
        let mut click_ips = HashMap::new();
        for i in 0..records {
            let time_ms = i / records_per_ms;
            let record = match rng.random_range(0..10) {
                0 => {
                    let click_id = (!click_ids.is_empty() && rng.random_bool(0.8))
                        .then(|| click_ids[rng.random_range(0..click_ids.len())]);
                    conversion(rng, time_ms, click_id)
                }
                1 => impression(rng, time_ms),
                _ => click(rng, time_ms),
            };
            match &record {
                ShardRecord::Click(c) => {
                    click_ids.push(c.id);
                    click_ips.insert(c.id, c.ip);
                }
                ShardRecord::Conversion(c) => conversion_ids.push(c.id),
                _ => {}
            }
            state.apply(record);
        }
        RandomState {
            state,
            click_ids,
            conversion_ids,
            click_ips,
        }
    }

    struct RandomState {
        state: ShardState,
        click_ids: Vec<[u8; 16]>,
        conversion_ids: Vec<[u8; 16]>,
        /// What each click came from, as its record said.
        click_ips: HashMap<[u8; 16], IpAddr>,
    }

    fn retention() -> Retention<impl Fn(u32, u64) -> bool, impl Fn(&ConversionRec, bool) -> bool> {
        Retention {
            keep_clicks_since_ms: 1_000,
            keep_impression: |campaign, _| campaign <= 2,
            keep_conversion: |c: &ConversionRec, click_kept| click_kept || c.time_ms >= 1_500,
        }
    }

    /// A frozen state is the state as it was when frozen: the snapshot built from it later
    /// is byte for byte the one built at that moment, whatever the live state applied since
    /// (appends into shared chunks, a status change of a shared conversion, more
    /// impressions). Enough clicks to fill several of the store's chunks.
    #[test]
    fn a_frozen_state_keeps_its_moment() {
        let seed = crate::test_seed::seed();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let RandomState {
            mut state,
            click_ids,
            conversion_ids,
            click_ips,
        } = random_state(&mut rng, 100_000, 33);
        let expected = encode_shard_snapshot(&state.freeze().to_snapshot(retention()));
        let frozen = state.freeze();
        for time_ms in 3_000..3_500u64 {
            let record = match rng.random_range(0..4) {
                0 => ShardRecord::StatusChange {
                    conversion_id: conversion_ids[rng.random_range(0..conversion_ids.len())],
                    status: ConversionStatus::Rejected,
                    time_ms,
                    audit: "rejected".into(),
                    deliveries: Vec::new(),
                },
                1 => impression(&mut rng, time_ms),
                2 => conversion(&mut rng, time_ms, Some(click_ids[0])),
                _ => click(&mut rng, time_ms),
            };
            state.apply(record);
        }
        let snapshot = frozen.to_snapshot(retention());
        assert_eq!(
            encode_shard_snapshot(&snapshot),
            expected,
            "seed {seed}: the frozen state changed"
        );
        // What the snapshot thread writes: the same bytes, conversions borrowed.
        let mut streamed = Vec::new();
        frozen
            .snapshot_parts(retention())
            .encode_into(&mut streamed)
            .expect("encode into a Vec");
        assert_eq!(
            streamed, expected,
            "seed {seed}: borrowed conversions encode differently"
        );
        let live = state.freeze().to_snapshot(retention());
        assert!(live.clicks.len() > snapshot.clicks.len(), "seed {seed}");
        // Each click with the address it came from (IPv6 ones from the side table).
        for c in &snapshot.clicks {
            assert_eq!(Some(&c.ip), click_ips.get(&c.id), "seed {seed}: click IP");
        }
        assert!(
            snapshot.clicks.iter().any(|c| c.ip.is_ipv6()),
            "seed {seed}"
        );
        // What the retention says, item by item.
        assert!(snapshot.clicks.iter().all(|c| c.time_ms >= 1_000));
        assert!(snapshot
            .impressions
            .iter()
            .all(|&(_, campaign, _)| campaign <= 2));
        let kept_click = |id: &[u8; 16]| snapshot.clicks.iter().any(|c| c.id == *id);
        for c in frozen.conversions.iter() {
            let kept = snapshot.conversions.iter().any(|s| s.id == c.id);
            let click_kept = c.click_id.as_ref().is_some_and(kept_click);
            assert_eq!(
                kept,
                click_kept || c.time_ms >= 1_500,
                "seed {seed}: conversion at {} (click kept: {click_kept})",
                c.time_ms
            );
        }
    }

    /// A compacting snapshot writes the snapshot of the state before the compaction (its
    /// thread then rebuilds the state from it), where the on-actor compaction wrote the
    /// snapshot of the rebuilt state: the same bytes, since a snapshot of a state rebuilt
    /// from a snapshot, under the same retention, is that snapshot. Clicks on IPv6, shared
    /// tails, conversions kept for their click or their age, impressions and counters.
    #[test]
    fn a_snapshot_of_a_compacted_state_is_the_snapshot_it_was_compacted_from() {
        let seed = crate::test_seed::seed();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let state = random_state(&mut rng, 20_000, 10).state;
        let snapshot = state.freeze().to_snapshot(retention());
        assert!(
            snapshot.clicks.len() < state.click_count()
                && snapshot.conversions.len() < state.conversions.len(),
            "seed {seed}: the retention leaves some out"
        );
        let compacted = ShardState::from_snapshot(snapshot.clone());
        assert_eq!(
            encode_shard_snapshot(&compacted.freeze().to_snapshot(retention())),
            encode_shard_snapshot(&snapshot),
            "seed {seed}"
        );
    }

    /// A report groups the counters as they were when frozen (not the clicks applied
    /// since), by any keys and days, and gives up once it passes its bound of groups.
    #[test]
    fn frozen_counters_group_as_they_were_and_give_up_past_the_bound() {
        use crate::api::GroupKey;
        use crate::stats::GroupTuple;
        const MS_PER_DAY: u64 = 86_400_000;
        let seed = crate::test_seed::seed();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut state = ShardState::default();
        // (day, campaign, sid1) -> clicks, kept the simple way.
        let mut model: HashMap<(u32, u32, String), u64> = HashMap::new();
        for _ in 0..2_000 {
            let day = rng.random_range(0..3u32);
            let record = click(&mut rng, u64::from(day) * MS_PER_DAY + 5);
            if let ShardRecord::Click(c) = &record {
                *model
                    .entry((day, c.campaign_id, c.sub_ids[0].clone()))
                    .or_default() += 1;
            }
            state.apply(record);
        }
        let frozen = state.freeze_counters();
        for _ in 0..500 {
            state.apply(click(&mut rng, MS_PER_DAY + 5));
        }
        let check = |from: u32, to: u32, group_by: &[GroupKey]| {
            let mut expected: HashMap<GroupTuple, u64> = HashMap::new();
            for ((day, campaign, sid1), clicks) in &model {
                if (from..=to).contains(day) {
                    let tuple = GroupTuple {
                        day: group_by.contains(&GroupKey::Day).then_some(*day),
                        campaign_id: group_by.contains(&GroupKey::Campaign).then_some(*campaign),
                        sid1: group_by.contains(&GroupKey::Sid1).then(|| sid1.clone()),
                        ..GroupTuple::default()
                    };
                    *expected.entry(tuple).or_default() += clicks;
                }
            }
            let got: HashMap<GroupTuple, u64> = frozen
                .report(from, to, group_by, usize::MAX)
                .expect("unbounded")
                .into_iter()
                .map(|(tuple, counters)| (tuple, counters.clicks))
                .collect();
            assert_eq!(
                got, expected,
                "seed {seed}: days {from}-{to} by {group_by:?}"
            );
            expected.len()
        };
        check(0, 2, &[GroupKey::Campaign]);
        check(1, 1, &[GroupKey::Day, GroupKey::Sid1]);
        let groups = check(0, 2, &[GroupKey::Day, GroupKey::Campaign, GroupKey::Sid1]);
        let all = [GroupKey::Day, GroupKey::Campaign, GroupKey::Sid1];
        assert!(
            frozen.report(0, 2, &all, groups - 1).is_none(),
            "seed {seed}"
        );
        let bounded = frozen.report(0, 2, &all, groups).map(|g| g.len());
        assert_eq!(bounded, Some(groups), "seed {seed}");
    }

    /// The heap's first items by key are what sorting all and truncating gives, ties
    /// included (equal keys are interchangeable: the key decides the order alone).
    #[test]
    fn first_by_key_is_sort_and_truncate() {
        let seed = crate::test_seed::seed();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..200 {
            let items: Vec<(u32, u32)> = (0..rng.random_range(0..300))
                .map(|i| (rng.random_range(0..50), i))
                .collect();
            let limit = rng.random_range(0..120);
            let keys = |v: &[(u32, u32)]| v.iter().map(|&(k, _)| k).collect::<Vec<_>>();
            let mut sorted = items.clone();
            sorted.sort_by_key(|&(k, _)| k);
            sorted.truncate(limit);
            let first = super::first_by_key(items.into_iter(), limit, |&(k, _)| k);
            assert_eq!(keys(&first), keys(&sorted), "seed {seed}, limit {limit}");
        }
    }
}
