//! An append-only map for the shard's side tables that grow with its traffic: the interned
//! tails and first sub IDs, the impressions' uniqueness entries and the report counters.
//! Entries live in a [`Chunked`] store in the order they came, and are found through a
//! [`ClickIndex`] of their keys' hashes.
//!
//! Why not a hashbrown map, as these tables were: a hashbrown map doubles in one step, on
//! the shard actor that answers every request of the shard, and freezing the state for a
//! snapshot copied each whole map there. Neither showed with the benchmark's clicks, which
//! all carry the same sub ID; with traffic whose clicks each carry their own sub IDs
//! (affiliates commonly pass their own transaction ID in one), or impressions from
//! millions of visitors, these tables grow by an entry per request, as the click store
//! does. Here growing never copies an entry (a new chunk), the index grows a few slots per
//! insert (see [`ClickIndex`]), and a frozen copy shares the chunks copy on write.
//!
//! Entries are never removed (a compaction rebuilds the state), so an entry's position is
//! stable: the interners hand it out as the interned ID.

use super::chunked::Chunked;
use super::index::{tag_of, ClickIndex, Probe, MAX_INDEX};
use hashbrown::{DefaultHashBuilder, Equivalent};
use std::hash::{BuildHasher, Hash};

/// A map from `K` to `V` that only grows; `CHUNK` entries to a chunk of its store.
///
/// Keys hash with hashbrown's default hasher (foldhash, seeded per process), as the maps it
/// replaced did: some keys are visitors' strings, and a per-process seed keeps them from
/// choosing which keys share a probe run.
pub struct ChunkedMap<K, V, const CHUNK: usize> {
    entries: Chunked<(K, V), CHUNK>,
    index: ClickIndex,
    hasher: DefaultHashBuilder,
}

impl<K, V, const CHUNK: usize> Default for ChunkedMap<K, V, CHUNK> {
    fn default() -> Self {
        ChunkedMap {
            entries: Chunked::default(),
            index: ClickIndex::default(),
            hasher: DefaultHashBuilder::default(),
        }
    }
}

impl<K: Hash + Clone, V: Clone, const CHUNK: usize> ChunkedMap<K, V, CHUNK> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Where `key` is, if present; otherwise the probe to insert it with.
    fn probe<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) -> (u32, Probe) {
        let tag = tag_of(self.hasher.hash_one(key));
        let entries = &self.entries;
        let probe = self.index.probe(tag, |i| {
            entries
                .get(i as usize)
                .is_some_and(|(k, _)| key.equivalent(k))
        });
        (tag, probe)
    }

    /// The position of `key`'s entry (stable: entries never move).
    pub fn position<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) -> Option<u32> {
        match self.probe(key).1 {
            Probe::Found { idx, .. } => Some(idx),
            Probe::Vacant { .. } => None,
        }
    }

    pub fn get<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) -> Option<&V> {
        let position = self.position(key)?;
        self.entries.get(position as usize).map(|(_, v)| v)
    }

    /// The entry at `position`.
    pub fn at(&self, position: u32) -> Option<&(K, V)> {
        self.entries.get(position as usize)
    }

    /// The position and value of `key`'s entry, inserted first as `make` gives it if
    /// absent. `None` only when the map holds as many entries as its index can address
    /// ([`MAX_INDEX`], about four billion), which memory ends long before.
    pub fn get_or_insert_with<Q: Hash + Equivalent<K> + ?Sized>(
        &mut self,
        key: &Q,
        make: impl FnOnce() -> (K, V),
    ) -> Option<(u32, &mut V)> {
        let position = match self.probe(key) {
            (_, Probe::Found { idx, .. }) => idx,
            (tag, Probe::Vacant { pos }) => {
                if self.entries.len() > MAX_INDEX as usize {
                    return None;
                }
                let position = self.entries.len() as u32;
                self.entries.push(make());
                self.index.fill(pos, tag, position);
                position
            }
        };
        let (_, value) = self.entries.get_mut(position as usize)?;
        Some((position, value))
    }

    /// Makes room in the index for `additional` more entries without growing on the way
    /// (a rebuild knows how many it will insert).
    pub fn reserve(&mut self, additional: usize) {
        self.index.reserve(additional);
    }

    /// The entries as they are now, sharing every chunk (see [`Chunked::share`]): what a
    /// frozen state keeps of the map.
    pub fn share_entries(&self) -> Chunked<(K, V), CHUNK> {
        self.entries.share()
    }
}

#[cfg(test)]
mod tests {
    use super::ChunkedMap;
    use crate::test_seed::seed;
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;

    /// Against a `HashMap` over random keys, many repeated, across chunk boundaries and
    /// several growths of the index; positions are insertion order and never change, and a
    /// shared copy keeps what the map held when it was taken.
    #[test]
    fn answers_as_a_hash_map_does_and_keeps_positions() {
        let seed = seed();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut map: ChunkedMap<String, u64, 16> = ChunkedMap::default();
        let mut model: HashMap<String, (u32, u64)> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        let mut shared = None;
        for step in 0..5_000u64 {
            let key = format!("k{}", rng.random_range(0..2_000u32));
            let (position, value) = map
                .get_or_insert_with(key.as_str(), || (key.clone(), 0))
                .expect("room");
            *value += step;
            let entry = model.entry(key.clone()).or_insert_with(|| {
                order.push(key.clone());
                ((order.len() - 1) as u32, 0)
            });
            entry.1 += step;
            assert_eq!(position, entry.0, "seed {seed}: position of {key}");
            if step == 2_500 {
                shared = Some((map.share_entries(), order.len(), model.clone()));
            }
        }
        assert_eq!(map.len(), model.len(), "seed {seed}");
        for (key, &(position, value)) in &model {
            assert_eq!(map.get(key.as_str()), Some(&value), "seed {seed}: {key}");
            assert_eq!(map.position(key.as_str()), Some(position), "seed {seed}");
            assert_eq!(map.at(position).map(|(k, _)| k), Some(key), "seed {seed}");
        }
        assert_eq!(map.get("absent"), None, "seed {seed}");
        assert!(
            map.share_entries().iter().map(|(k, _)| k).eq(order.iter()),
            "seed {seed}: insertion order"
        );
        // The copy taken halfway holds the entries and values of then, in their order.
        let (copy, len, then) = shared.expect("taken");
        assert_eq!(copy.len(), len, "seed {seed}");
        for (key, value) in copy.iter() {
            assert_eq!(
                then.get(key).map(|e| e.1),
                Some(*value),
                "seed {seed}: {key}"
            );
        }
        assert!(
            copy.iter().map(|(k, _)| k).eq(order[..len].iter()),
            "seed {seed}: order of the copy"
        );
    }
}
