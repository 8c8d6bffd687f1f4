//! The shard's click indexes (by click ID, and latest click per fingerprint and campaign):
//! open addressing with linear probing over one array of 8-byte slots.
//!
//! Why not `hashbrown::HashTable`: at millions of clicks every probe of a fresh key is a
//! cache miss, and hashbrown's probe reads two places (the control bytes, then the slot),
//! so the two indexes cost about four misses per click, most of the click's time on the
//! shard. Here a slot holds 32 bits of its key's hash (the tag) and the click's index, so a
//! probe reads one place, and compares tags without reading the click store. The slot's
//! position is the tag's top bits: slots are in tag order (up to probing), so doubling the
//! table walks the old array and fills the new one front to back, a streaming copy rather
//! than one miss per entry.
//!
//! Entries are only added or repointed, never removed (a snapshot that drops clicks
//! rebuilds the state), so probing needs no tombstones.

/// A slot: the tag in the low 32 bits, the click's index plus one in the high 32 bits; 0
/// is an empty slot, so a new table is zeroed memory (a plain `u64` so that `vec![0; n]`
/// asks the allocator for zeroed pages instead of writing them).
type Slot = u64;

fn slot(tag: u32, idx: u32) -> Slot {
    u64::from(idx + 1) << 32 | u64::from(tag)
}
fn is_empty(slot: Slot) -> bool {
    slot == 0
}
fn tag(slot: Slot) -> u32 {
    slot as u32
}
fn idx(slot: Slot) -> u32 {
    ((slot >> 32) as u32).wrapping_sub(1)
}

/// Click indexes stop below this: the slot stores `idx + 1` in 32 bits.
pub const MAX_INDEX: u32 = u32::MAX - 1;

/// Smallest table (slots) once anything is inserted.
const MIN_SLOTS: usize = 16;

/// Load factor at most 3/4 as the table grows: linear probing's unsuccessful search then
/// reads about 8.5 slots at worst (68 bytes, about one cache line and its neighbour), 2.5
/// on average over a doubling cycle; at hashbrown's 7/8 it would read 32.
const MAX_LOAD_NUM: usize = 3;
const MAX_LOAD_DEN: usize = 4;
/// Load factor at most 7/8 for room reserved at once (recovery knows how many clicks it
/// replays): at 3/4 a table reserved for a few hundred thousand clicks was often twice
/// the size, and recovery paid a page fault for every 4 KiB of it. The next growth goes
/// back to 3/4.
const RESERVED_LOAD_NUM: usize = 7;
const RESERVED_LOAD_DEN: usize = 8;

/// An index from a 32-bit tag (of a random or keyed hash) to click indexes. Several keys
/// may share a tag: lookups confirm a tag match with the caller's `eq`.
#[derive(Default)]
pub struct ClickIndex {
    slots: Vec<Slot>,
    len: usize,
    /// Entries the table takes before it grows.
    limit: usize,
    /// `32 - log2(slots.len())`: a tag's home slot is its top bits.
    shift: u32,
}

/// The tag of a 64-bit hash: its low 32 bits, multiplied by an odd constant (a bijection
/// of 32-bit values, so keys whose low bits differ keep distinct tags) to carry every bit
/// into the top bits that place the slot.
pub fn tag_of(hash: u64) -> u32 {
    (hash as u32).wrapping_mul(0x9E37_79B9)
}

/// Where a probe for a key ended.
pub enum Probe {
    /// The key is there: the slot's position and the click index it holds.
    Found { pos: usize, idx: u32 },
    /// The key is absent: the empty slot to fill.
    Vacant { pos: usize },
}

impl ClickIndex {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, tag: u32) -> usize {
        (u64::from(tag) >> self.shift) as usize
    }

    /// Bytes of the slot array.
    pub fn allocation_size(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
    }

    /// Reads the tag's home slot and returns a value of it. A caller about to insert many
    /// keys reads their home slots first, all in one go: the loads miss the cache together
    /// (the processor overlaps independent loads) instead of one after the other.
    pub fn touch(&self, tag: u32) -> u64 {
        self.slots.get(self.home(tag)).copied().unwrap_or(0)
    }

    /// Probes for `tag`; `eq` confirms that a click index with that tag is the key.
    pub fn probe(&self, tag: u32, mut eq: impl FnMut(u32) -> bool) -> Probe {
        if self.slots.is_empty() {
            return Probe::Vacant { pos: usize::MAX };
        }
        let mask = self.mask();
        let mut pos = self.home(tag);
        // Ends: the table is never full (load at most 3/4), so an empty slot comes.
        loop {
            let s = self.slots[pos];
            if is_empty(s) {
                return Probe::Vacant { pos };
            }
            if self::tag(s) == tag && eq(idx(s)) {
                return Probe::Found { pos, idx: idx(s) };
            }
            pos = (pos + 1) & mask;
        }
    }

    pub fn find(&self, tag: u32, eq: impl FnMut(u32) -> bool) -> Option<u32> {
        match self.probe(tag, eq) {
            Probe::Found { idx, .. } => Some(idx),
            Probe::Vacant { .. } => None,
        }
    }

    /// Fills the vacant slot a [`ClickIndex::probe`] of `tag` found, with no insertion
    /// since (so the position is still the key's). Makes room first if needed (and then
    /// probes again).
    pub fn fill(&mut self, vacant_pos: usize, tag: u32, idx: u32) {
        debug_assert!(idx <= MAX_INDEX);
        let pos = if self.needs_room(1) {
            self.grow(self.len + 1);
            self.vacant_pos(tag)
        } else {
            vacant_pos
        };
        self.slots[pos] = slot(tag, idx);
        self.len += 1;
    }

    /// Points the slot a probe found at another click.
    pub fn repoint(&mut self, found_pos: usize, idx: u32) {
        let s = &mut self.slots[found_pos];
        *s = slot(tag(*s), idx);
    }

    /// Inserts a key known to be absent.
    pub fn insert_unique(&mut self, tag: u32, idx: u32) {
        debug_assert!(idx <= MAX_INDEX);
        if self.needs_room(1) {
            self.grow(self.len + 1);
        }
        let pos = self.vacant_pos(tag);
        self.slots[pos] = slot(tag, idx);
        self.len += 1;
    }

    /// Makes room for `additional` more entries without growing on the way (filling the
    /// table up to 7/8, see [`RESERVED_LOAD_NUM`]).
    pub fn reserve(&mut self, additional: usize) {
        let entries = self.len + additional;
        let fits = |slots: usize| slots * RESERVED_LOAD_NUM / RESERVED_LOAD_DEN;
        if entries <= self.limit.max(fits(self.slots.len())) {
            self.limit = self.limit.max(entries);
            return;
        }
        let slots = (entries * RESERVED_LOAD_DEN)
            .div_ceil(RESERVED_LOAD_NUM)
            .next_power_of_two()
            .max(MIN_SLOTS);
        self.rehash(slots);
        self.limit = self.limit.max(entries);
    }

    fn needs_room(&self, additional: usize) -> bool {
        self.len + additional > self.limit
    }

    /// The first empty slot from the tag's home (the table has room).
    fn vacant_pos(&self, tag: u32) -> usize {
        let mask = self.mask();
        let mut pos = self.home(tag);
        while !is_empty(self.slots[pos]) {
            pos = (pos + 1) & mask;
        }
        pos
    }

    /// Moves every entry into a table big enough for `entries` at the growing load.
    fn grow(&mut self, entries: usize) {
        let wanted = (entries * MAX_LOAD_DEN).div_ceil(MAX_LOAD_NUM);
        self.rehash(wanted.next_power_of_two().max(MIN_SLOTS));
    }

    /// Moves every entry into a table of `size` slots (a power of two).
    fn rehash(&mut self, size: usize) {
        self.limit = size / MAX_LOAD_DEN * MAX_LOAD_NUM;
        let old = std::mem::replace(&mut self.slots, vec![0; size]);
        self.shift = 32 - size.trailing_zeros();
        // Start after an empty slot, so no run of probed slots is split at the array's end:
        // entries then come in the order of their home slots, and the new table fills
        // front to back.
        let start = old.iter().position(|&s| is_empty(s)).unwrap_or(0);
        let (tail, head) = old.split_at(start);
        for &s in head.iter().chain(tail).filter(|&&s| !is_empty(s)) {
            let pos = self.vacant_pos(tag(s));
            self.slots[pos] = s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;

    /// Inserts, repoints and finds against a map, across growth, with many shared tags
    /// (few distinct tag values, so long probe runs and wrap-around at the array's end).
    #[test]
    fn index_agrees_with_a_map() {
        let seed = crate::test_seed::seed();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for tags in [u32::MAX, 1_000, 7] {
            let mut index = ClickIndex::default();
            // key -> (tag, idx); the "store" maps an idx to its key.
            let mut model: HashMap<u64, u32> = HashMap::new();
            let mut store: Vec<u64> = Vec::new();
            let tag = |key: u64| tag_of(key % u64::from(tags));
            for step in 0..5_000u32 {
                let key = rng.random_range(0..3_000u64);
                let idx = store.len() as u32;
                store.push(key);
                let t = tag(key);
                match index.probe(t, |i| store[i as usize] == key) {
                    Probe::Found { pos, idx: old } => {
                        assert_eq!(model.get(&key), Some(&old), "seed {seed}, step {step}");
                        index.repoint(pos, idx);
                    }
                    Probe::Vacant { pos } => {
                        assert_eq!(model.get(&key), None, "seed {seed}, step {step}");
                        index.fill(pos, t, idx);
                    }
                }
                model.insert(key, idx);
                assert_eq!(index.len(), model.len());
            }
            for key in 0..3_100u64 {
                let found = index.find(tag(key), |i| store[i as usize] == key);
                assert_eq!(found, model.get(&key).copied(), "seed {seed}, key {key}");
            }
            // Reserved room is taken without growing (up to 7/8 full).
            let mut unique = ClickIndex::default();
            unique.reserve(10);
            unique.insert_unique(tag(store[0]), 0);
            unique.reserve(3_499);
            let reserved_bytes = unique.allocation_size();
            assert_eq!(reserved_bytes, 4_096 * 8, "3 500 entries in 4 096 slots");
            for (idx, &key) in store.iter().enumerate().take(3_500).skip(1) {
                unique.insert_unique(tag(key), idx as u32);
            }
            assert_eq!(unique.allocation_size(), reserved_bytes, "seed {seed}");
            unique.insert_unique(tag(store[3_500]), 3_500);
            assert_eq!(
                unique.allocation_size(),
                2 * reserved_bytes,
                "then it grows"
            );
            for (idx, &key) in store.iter().enumerate().take(3_501) {
                let found = unique.find(tag(key), |i| i == idx as u32);
                assert_eq!(found, Some(idx as u32), "seed {seed}, unique {idx}");
            }
        }
    }
}
