//! Start-up: recovering shard logs, and re-routing state when the shard count changed
//! (the protocol is described in [`crate::layout`]).

use crate::catalog::ControlLog;
use crate::codec::{self, ClickSnap, ControlRecord, CountersRec, ShardSnapshot, StatKeyRec, Tail};
use crate::ids::{pair_route_key, shard_of, Id};
use crate::layout;
use crate::shard::state::ShardState;
use std::collections::HashMap;
use std::path::Path;

/// Builds a new shard's snapshot from pieces of old shards.
#[derive(Default)]
struct SnapshotBuilder {
    snap: ShardSnapshot,
    tails: HashMap<Tail, u32>,
    counters: HashMap<StatKeyRec, CountersRec>,
}

impl SnapshotBuilder {
    fn tail(&mut self, tail: Tail) -> u32 {
        if let Some(&i) = self.tails.get(&tail) {
            return i;
        }
        let i = self.snap.tails.len() as u32;
        self.snap.tails.push(tail.clone());
        self.tails.insert(tail, i);
        i
    }

    fn finish(mut self) -> ShardSnapshot {
        let mut counters: Vec<_> = self.counters.into_iter().collect();
        counters.sort_by(|a, b| a.0.cmp(&b.0));
        self.snap.counters = counters;
        self.snap.clicks.sort_by_key(|c| c.time_ms);
        self.snap.conversions.sort_by_key(|c| c.time_ms);
        self.snap
    }
}

/// Re-routes one old shard's state into the new shards' builders.
fn distribute(old: ShardSnapshot, builders: &mut [SnapshotBuilder]) {
    let n = builders.len();
    let ShardSnapshot {
        clicks,
        tails,
        conversions,
        impressions,
        counters,
    } = old;
    for c in clicks {
        let b = &mut builders[Id(c.id).shard(n)];
        let tail = tails.get(c.tail as usize).cloned().unwrap_or_default();
        let tail = b.tail(tail);
        b.snap.clicks.push(ClickSnap { tail, ..c });
    }
    for c in conversions {
        builders[Id(c.id).shard(n)].snap.conversions.push(c);
    }
    for (fp, campaign, t) in impressions {
        builders[shard_of(crate::fingerprint::route_key(fp), n)]
            .snap
            .impressions
            .push((fp, campaign, t));
    }
    for (k, c) in counters {
        let b = &mut builders[shard_of(pair_route_key(k.campaign_id, k.affiliate_id), n)];
        b.counters.entry(k).or_default().add(&c);
    }
}

/// Changes the shard count from `old` to `new` (steps 1-5 of the layout protocol).
pub fn reshard(
    data_dir: &Path,
    old: usize,
    new: usize,
    options: &wal::Options,
    control: &mut ControlLog,
    storage: &layout::StorageFactory,
) -> Result<(), crate::Error> {
    tracing::info!(
        old,
        new,
        "shard count changed: re-routing every shard's records"
    );
    layout::clear_staging(data_dir)?;
    let mut builders: Vec<SnapshotBuilder> = (0..new).map(|_| SnapshotBuilder::default()).collect();
    for i in 0..old {
        let (wal, recovered) =
            layout::open_log(storage, &layout::shard_dir(data_dir, i), options.clone())?;
        let state = crate::shard::recover_state(&recovered)?;
        drop(wal);
        distribute(
            state.to_snapshot(0, |_, _| true, |_, _| true),
            &mut builders,
        );
    }
    for (j, b) in builders.into_iter().enumerate() {
        let (mut wal, _) = layout::open_log(
            storage,
            &layout::staged_shard_dir(data_dir, j),
            options.clone(),
        )?;
        let data = codec::encode_shard_snapshot(&b.finish());
        let lsn = wal.next_lsn();
        wal.write_snapshot(lsn, &data)?;
        wal.sync()?;
    }
    control.mark_reshard(ControlRecord::ReshardCommitted { shards: new as u32 })?;
    layout::finish_reshard(data_dir, new)?;
    control.mark_reshard(ControlRecord::ReshardDone { shards: new as u32 })?;
    Ok(())
}

/// Opens and recovers shard `index`.
pub fn open_shard(
    data_dir: &Path,
    index: usize,
    options: &wal::Options,
    storage: &layout::StorageFactory,
) -> Result<(wal::Wal, ShardState, wal::RecoveryReport), crate::Error> {
    let (mut wal, recovered) = layout::open_log(
        storage,
        &layout::shard_dir(data_dir, index),
        options.clone(),
    )?;
    let state = crate::shard::recover_state(&recovered)?;
    if !recovered.report.dropped.is_empty() {
        // The damaged bytes stay on disk; a snapshot of what survived makes the repair
        // permanent, so the next strict start-up does not meet them again.
        let data = codec::encode_shard_snapshot(&state.to_snapshot(0, |_, _| true, |_, _| true));
        let lsn = wal.next_lsn();
        wal.write_snapshot(lsn, &data)?;
    }
    Ok((wal, state, recovered.report))
}
