//! The shard's click indexes (by click ID, and latest click per fingerprint and campaign):
//! open addressing with linear probing over one array of 8-byte slots.
//!
//! Why not `hashbrown::HashTable`: at millions of clicks every probe of a fresh key is a
//! cache miss, and hashbrown's probe reads two places (the control bytes, then the slot),
//! so the two indexes cost about four misses per click, most of the click's time on the
//! shard. Here a slot holds 32 bits of its key's hash (the tag) and the click's index, so a
//! probe reads one place, and compares tags without reading the click store. The slot's
//! position is the tag's top bits: slots are in tag order (up to probing), so moving the
//! old array into a doubled one walks it front to back and fills the new one front to
//! back, a streaming copy rather than one miss per entry.
//!
//! Why growth is incremental: the index lives on the shard actor, which answers every
//! request of its shard, and doubling in one step stalled it for 13 / 52 / 84 ms at
//! 393 k / 786 k / 1.57 M clicks (both click indexes double at the same click), holding
//! every connection waiting on the shard; the HTTP click p99 climbed to 37–110 ms while
//! p50 stayed at 0.8 ms. So a growth only allocates the doubled table (a big one as pages the
//! kernel zeroes on first touch, see [`Slots`]) and keeps the old array; every later insert first moves the
//! next [`MIGRATE_SLOTS`] old slots over, and the old array is dropped once all are moved.
//!
//! How lookups stay correct while an old array is being moved out of: moved entries stay
//! behind in the old array as stale copies (clearing them would cut the probe runs of
//! entries not moved yet), so the old array is read only for keys that may not have moved.
//! Moving starts at an empty old slot and each step ends just after one, so the moved old
//! slots are whole probe runs: a key whose old home slot is among them is in the new table
//! if anywhere, and the old array is not read for it. Any other key is in the new table
//! (inserted since the growth) or in the old array (not moved yet), never in both: a
//! lookup reads the new table first, then the old array. An entry found in the old array
//! is repointed there, and moves later with its new value.
//!
//! Entries are only added or repointed, never removed (a snapshot that drops clicks
//! rebuilds the state), so probing needs no tombstones.

/// A slot: the tag in the low 32 bits, the click's index plus one in the high 32 bits; 0
/// is an empty slot, so a new table is zeroed memory (see [`Slots`]).
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

/// Old slots moved into the new table per insert while a growth is under way (at least:
/// a step goes on to the end of the probe run it is in, see the module doc). A growth out
/// of N slots makes 2N, whose limit (3/4·2N) leaves 3/4·N inserts of headroom over the
/// 3/4·N entries that triggered it (5/8·N after a reserve to 7/8), while the N old slots
/// must move before the next growth: 4/3 slots per insert would just do. 8 slots (one
/// 64-byte cache line of the old array) finish after N/8 inserts, a sixth of the headroom,
/// so lookups read two arrays only briefly, and a step costs about one streamed line of
/// reads and two of writes, far below the probe misses of the insert itself.
const MIGRATE_SLOTS: usize = 8;

/// Tables from this size on take their slots straight from the kernel (see [`Slots`]):
/// 2 MiB, where a table is large enough for its zeroing to hold a shard's answers for
/// milliseconds.
const KERNEL_ZEROED_FROM_BYTES: usize = 2 << 20;

/// A table's slot array. A big one is an anonymous mapping: the kernel zeroes each page on
/// its first touch, so a new table's zeroing is spread over the inserts that fill it and
/// the migration. From the allocator (`vec![0; n]`) a big zeroed block is often reused
/// memory, cleared whole inside the allocation: 16 ms for the 32 MiB table a shard's click
/// index takes at 1.57 M clicks, 8.6 ms for the conversion index at 393 k conversions,
/// every connection of the shard waiting (measured with a per-batch timer, one shard pinned
/// to a CPU), and growing with the table.
enum Slots {
    Heap(Vec<Slot>),
    Mapped(memmap2::MmapMut),
}

impl Slots {
    fn zeroed(len: usize) -> Self {
        let bytes = len * std::mem::size_of::<Slot>();
        if bytes >= KERNEL_ZEROED_FROM_BYTES {
            // Anonymous memory, not a file: the engine's disk access stays in `wal`. If
            // the kernel refuses the mapping, the allocator's memory serves as well.
            if let Ok(map) = memmap2::MmapMut::map_anon(bytes) {
                return Slots::Mapped(map);
            }
        }
        Slots::Heap(vec![0; len])
    }
}

impl Default for Slots {
    fn default() -> Self {
        Slots::Heap(Vec::new())
    }
}

impl std::ops::Deref for Slots {
    type Target = [Slot];
    fn deref(&self) -> &[Slot] {
        match self {
            Slots::Heap(v) => v,
            // A mapping is page-aligned and a whole number of slots long, so the cast
            // cannot fail.
            Slots::Mapped(m) => bytemuck::cast_slice(m),
        }
    }
}

impl std::ops::DerefMut for Slots {
    fn deref_mut(&mut self) -> &mut [Slot] {
        match self {
            Slots::Heap(v) => v,
            Slots::Mapped(m) => bytemuck::cast_slice_mut(m),
        }
    }
}

/// One array of slots, its length a power of two (or empty).
#[derive(Default)]
struct Table {
    slots: Slots,
    /// `32 - log2(slots.len())`: a tag's home slot is its top bits.
    shift: u32,
}

impl Table {
    /// A table of `size` empty slots (a power of two).
    fn zeroed(size: usize) -> Self {
        debug_assert!(size.is_power_of_two());
        Table {
            slots: Slots::zeroed(size),
            shift: 32 - size.trailing_zeros(),
        }
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, tag: u32) -> usize {
        (u64::from(tag) >> self.shift) as usize
    }

    /// The slot's position and click index of the key, or the empty slot where its probe
    /// ended (the table is not empty).
    fn probe(&self, tag: u32, eq: &mut impl FnMut(u32) -> bool) -> Result<(usize, u32), usize> {
        let mask = self.mask();
        let mut pos = self.home(tag);
        // Ends: a table is never full (load at most 7/8), so an empty slot comes.
        loop {
            let s = self.slots[pos];
            if is_empty(s) {
                return Err(pos);
            }
            if self::tag(s) == tag && eq(idx(s)) {
                return Ok((pos, idx(s)));
            }
            pos = (pos + 1) & mask;
        }
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

    /// Stores a slot whose key is absent.
    fn put(&mut self, s: Slot) {
        let pos = self.vacant_pos(tag(s));
        self.slots[pos] = s;
    }
}

/// An index from a 32-bit tag (of a random or keyed hash) to click indexes. Several keys
/// may share a tag: lookups confirm a tag match with the caller's `eq`.
#[derive(Default)]
pub struct ClickIndex {
    /// The table inserts go to.
    table: Table,
    /// The table before the last growth while its entries move into `table` (a few per
    /// insert), empty otherwise. Moved entries stay behind as stale copies, see the module
    /// doc.
    old: Table,
    /// Where moving out of `old` started: an empty slot, so no probe run crosses it.
    old_start: usize,
    /// Old slots moved so far, counted from `old_start`: always up to just after an empty
    /// slot, so they are whole probe runs.
    old_moved: usize,
    len: usize,
    /// Entries the table takes before it grows.
    limit: usize,
}

/// The tag of a 64-bit hash: its low 32 bits, multiplied by an odd constant (a bijection
/// of 32-bit values, so keys whose low bits differ keep distinct tags) to carry every bit
/// into the top bits that place the slot.
pub fn tag_of(hash: u64) -> u32 {
    (hash as u32).wrapping_mul(0x9E37_79B9)
}

/// Where a probe for a key ended.
pub enum Probe {
    /// The key is there: its slot, for [`ClickIndex::repoint`], and the click index it
    /// holds.
    Found { pos: FoundSlot, idx: u32 },
    /// The key is absent: the empty slot to fill.
    Vacant { pos: usize },
}

/// A found key's slot: its position, in the table or in the old array still being moved
/// out of (so that a repoint updates the copy lookups read).
#[derive(Clone, Copy, Debug)]
pub struct FoundSlot {
    pos: usize,
    in_old: bool,
}

impl ClickIndex {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// Bytes of the slot arrays (both while a growth is under way).
    pub fn allocation_size(&self) -> usize {
        (self.table.slots.len() + self.old.slots.len()) * std::mem::size_of::<Slot>()
    }

    /// Reads the tag's home slot and returns a value of it. A caller about to insert many
    /// keys reads their home slots first, all in one go: the loads miss the cache together
    /// (the processor overlaps independent loads) instead of one after the other. While a
    /// growth is under way it reads the old array's home slot too where the key may be
    /// there, since a probe of an absent key reads both (in an index-only measurement of
    /// batched clicks this took the clicks during a growth from 365 to 305 ns each).
    pub fn touch(&self, tag: u32) -> u64 {
        let slot = self.table.slots.get(self.table.home(tag)).copied();
        if self.maybe_in_old(tag) {
            slot.unwrap_or(0) ^ self.old.slots[self.old.home(tag)]
        } else {
            slot.unwrap_or(0)
        }
    }

    /// Whether the key of `tag`, if present, may be in the old array: a growth is under
    /// way and the tag's old home slot is not moved yet.
    fn maybe_in_old(&self, tag: u32) -> bool {
        !self.old.slots.is_empty()
            && (self.old.home(tag).wrapping_sub(self.old_start) & self.old.mask()) >= self.old_moved
    }

    /// Probes for `tag`; `eq` confirms that a click index with that tag is the key.
    #[inline]
    pub fn probe(&self, tag: u32, mut eq: impl FnMut(u32) -> bool) -> Probe {
        if self.table.slots.is_empty() {
            return Probe::Vacant { pos: usize::MAX };
        }
        let vacant = match self.table.probe(tag, &mut eq) {
            Ok((pos, idx)) => {
                let pos = FoundSlot { pos, in_old: false };
                return Probe::Found { pos, idx };
            }
            Err(vacant) => vacant,
        };
        if self.maybe_in_old(tag) {
            return self.probe_old(tag, eq, vacant);
        }
        Probe::Vacant { pos: vacant }
    }

    /// The rest of a probe while a growth is under way: the old array, then `vacant` in
    /// the table. Out of line, so that the usual probe stays small enough to inline.
    #[inline(never)]
    fn probe_old(&self, tag: u32, mut eq: impl FnMut(u32) -> bool, vacant: usize) -> Probe {
        match self.old.probe(tag, &mut eq) {
            Ok((pos, idx)) => {
                let pos = FoundSlot { pos, in_old: true };
                Probe::Found { pos, idx }
            }
            Err(_) => Probe::Vacant { pos: vacant },
        }
    }

    pub fn find(&self, tag: u32, eq: impl FnMut(u32) -> bool) -> Option<u32> {
        match self.probe(tag, eq) {
            Probe::Found { idx, .. } => Some(idx),
            Probe::Vacant { .. } => None,
        }
    }

    /// Fills the vacant slot a [`ClickIndex::probe`] of `tag` found, with no insertion
    /// since (so the position is still the key's). Makes room first (and then probes
    /// again if the table changed or a moved entry took the slot).
    pub fn fill(&mut self, vacant_pos: usize, tag: u32, idx: u32) {
        debug_assert!(idx <= MAX_INDEX);
        // A slot still empty is still the first empty one of the key's probe: entries are
        // never removed, so the slots before it on the way stay full.
        let pos = if self.make_room() || !is_empty(self.table.slots[vacant_pos]) {
            self.table.vacant_pos(tag)
        } else {
            vacant_pos
        };
        self.table.slots[pos] = slot(tag, idx);
        self.len += 1;
    }

    /// Points the slot a probe found, with no insertion since, at another click.
    pub fn repoint(&mut self, found: FoundSlot, idx: u32) {
        let table = if found.in_old {
            &mut self.old
        } else {
            &mut self.table
        };
        let s = &mut table.slots[found.pos];
        *s = slot(tag(*s), idx);
    }

    /// Inserts a key known to be absent.
    pub fn insert_unique(&mut self, tag: u32, idx: u32) {
        debug_assert!(idx <= MAX_INDEX);
        self.make_room();
        self.table.put(slot(tag, idx));
        self.len += 1;
    }

    /// Makes room for `additional` more entries without growing on the way (filling the
    /// table up to 7/8, see [`RESERVED_LOAD_NUM`]). Moves every entry at once: recovery
    /// reserves before it replays, when there is nothing to answer yet.
    pub fn reserve(&mut self, additional: usize) {
        self.finish_moving();
        let entries = self.len + additional;
        let fits = |slots: usize| slots * RESERVED_LOAD_NUM / RESERVED_LOAD_DEN;
        if entries <= self.limit.max(fits(self.table.slots.len())) {
            self.limit = self.limit.max(entries);
            return;
        }
        let slots = (entries * RESERVED_LOAD_DEN)
            .div_ceil(RESERVED_LOAD_NUM)
            .next_power_of_two()
            .max(MIN_SLOTS);
        self.resize(slots);
        self.finish_moving();
        self.limit = self.limit.max(entries);
    }

    /// Before an insert: starts a growth if the table is at its limit (returns true: the
    /// table changed), else moves the next old slots of a growth under way.
    fn make_room(&mut self) -> bool {
        if self.len < self.limit {
            self.move_old(MIGRATE_SLOTS);
            return false;
        }
        let wanted = ((self.len + 1) * MAX_LOAD_DEN).div_ceil(MAX_LOAD_NUM);
        self.resize(wanted.next_power_of_two().max(MIN_SLOTS));
        true
    }

    /// Replaces the table with an empty one of `size` slots (a power of two) and starts
    /// moving the entries into it.
    fn resize(&mut self, size: usize) {
        // A growth still under way (MIGRATE_SLOTS is chosen so that it never is, see
        // there): move the rest first, so the old array can go without losing an entry.
        self.finish_moving();
        self.limit = size / MAX_LOAD_DEN * MAX_LOAD_NUM;
        self.old = std::mem::replace(&mut self.table, Table::zeroed(size));
        // Start at an empty slot, so no run of probed slots is split at the array's end:
        // entries then come in the order of their home slots, and the new table fills
        // front to back. (A table is never full; a fresh one has no slots to move.)
        self.old_start = self
            .old
            .slots
            .iter()
            .position(|&s| is_empty(s))
            .unwrap_or(0);
        self.old_moved = 0;
        if self.len == 0 {
            self.old = Table::default();
        }
    }

    /// Moves at least `at_least` old slots (all that are left if fewer), then on to the end
    /// of the probe run it is in (just past an empty slot); drops the old array once every
    /// slot has moved.
    fn move_old(&mut self, at_least: usize) {
        let total = self.old.slots.len();
        if total == 0 {
            return;
        }
        let mask = self.old.mask();
        let mut count = 0;
        while self.old_moved < total {
            let s = self.old.slots[(self.old_start + self.old_moved) & mask];
            self.old_moved += 1;
            count += 1;
            if !is_empty(s) {
                self.table.put(s);
            } else if count >= at_least {
                break;
            }
        }
        if self.old_moved == total {
            self.old = Table::default();
        }
    }

    fn finish_moving(&mut self) {
        self.move_old(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::{HashMap, HashSet};

    /// Whether the index is still moving entries out of an old array.
    fn moving(index: &ClickIndex) -> bool {
        !index.old.slots.is_empty()
    }

    /// Inserts, repoints and finds against a map, across many growths, with lookups,
    /// repoints and fills in the middle of moving out of the old array (an entry repointed
    /// there is found with its new click after it moved), and with many shared tags (few
    /// distinct tag values, so long probe runs and wrap-around at the array's end). Then
    /// unique inserts into reserved room and across a growth, which spreads its move over
    /// later inserts.
    #[test]
    fn index_agrees_with_a_map() {
        let seed = crate::test_seed::seed();
        let mut rng = StdRng::seed_from_u64(seed);
        // (distinct tags, distinct keys, steps): with few tags a probe run is about as long
        // as the table, so fewer keys keep the test fast. At least 4 013 steps: the unique
        // part inserts that many.
        for (tags, keys, steps) in [
            (u32::MAX, 12_000u64, 16_000u32),
            (1_000, 6_000, 8_000),
            (7, 1_500, 4_100),
        ] {
            let mut index = ClickIndex::default();
            // key -> idx; the "store" maps an idx to its key.
            let mut model: HashMap<u64, u32> = HashMap::new();
            let mut store: Vec<u64> = Vec::new();
            let tag = |key: u64| tag_of(key % u64::from(tags));
            let check =
                |index: &ClickIndex, model: &HashMap<u64, u32>, store: &[u64], key, at: &str| {
                    let found = index.find(tag(key), |i| store[i as usize] == key);
                    assert_eq!(found, model.get(&key).copied(), "{at}, key {key}");
                };
            // Keys repointed in the old array during the current growth, and how many were
            // then found after the move ended.
            let mut repointed_in_old = HashSet::new();
            let (mut found_moved, mut growths) = (0, 0);
            for step in 0..steps {
                let at = format!("seed {seed}, tags {tags}, step {step}");
                let key = rng.random_range(0..keys);
                let idx = store.len() as u32;
                store.push(key);
                let t = tag(key);
                let was_moving = moving(&index);
                match index.probe(t, |i| store[i as usize] == key) {
                    Probe::Found { pos, idx: old } => {
                        assert_eq!(model.get(&key), Some(&old), "{at}");
                        if pos.in_old {
                            repointed_in_old.insert(key);
                        }
                        index.repoint(pos, idx);
                    }
                    Probe::Vacant { pos } => {
                        assert_eq!(model.get(&key), None, "{at}");
                        index.fill(pos, t, idx);
                    }
                }
                model.insert(key, idx);
                assert_eq!(index.len(), model.len(), "{at}");
                // This key and a random one (maybe never inserted) after every step; every
                // key when a growth starts or ends, and every 200 steps.
                check(&index, &model, &store, key, &at);
                check(&index, &model, &store, rng.random_range(0..keys + 100), &at);
                let is_moving = moving(&index);
                if is_moving != was_moving || step % 200 == 0 {
                    for key in 0..keys + 100 {
                        check(&index, &model, &store, key, &at);
                    }
                }
                growths += u32::from(is_moving && !was_moving);
                if was_moving && !is_moving {
                    found_moved += repointed_in_old.len();
                    repointed_in_old.clear();
                }
            }
            if tags == u32::MAX {
                assert!(growths >= 9, "seed {seed}: {growths} growths");
                assert!(found_moved > 0, "seed {seed}: no repoint in an old array");
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
            // The insert past the reserved room doubles the table and moves nothing yet:
            // both arrays are held...
            unique.insert_unique(tag(store[3_500]), 3_500);
            assert_eq!(
                unique.allocation_size(),
                3 * reserved_bytes,
                "then it grows, keeping the old array"
            );
            // ... until later inserts have moved the old array's 4 096 slots, at least
            // MIGRATE_SLOTS each. Meanwhile the latest entries and a sample of the others
            // are found.
            let most = 4_096 / MIGRATE_SLOTS;
            let mut inserted = 3_501;
            while moving(&unique) && inserted < 3_501 + most {
                unique.insert_unique(tag(store[inserted]), inserted as u32);
                inserted += 1;
                let sample = (0..16).map(|_| rng.random_range(0..inserted));
                for idx in (inserted - 16..inserted).chain(sample) {
                    let found = unique.find(tag(store[idx]), |i| i == idx as u32);
                    assert_eq!(found, Some(idx as u32), "seed {seed}, unique {idx}");
                }
            }
            assert_eq!(
                unique.allocation_size(),
                2 * reserved_bytes,
                "seed {seed}: the old array is released within {most} inserts"
            );
            for (idx, &key) in store.iter().enumerate().take(inserted) {
                let found = unique.find(tag(key), |i| i == idx as u32);
                assert_eq!(found, Some(idx as u32), "seed {seed}, unique {idx}");
            }
        }
    }

    /// Tables past [`KERNEL_ZEROED_FROM_BYTES`] live in kernel-zeroed memory: one grown
    /// into that size, and one reserved at it, answer as the small ones do.
    #[test]
    fn big_tables_answer_as_small_ones() {
        let seed = crate::test_seed::seed();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let entries = KERNEL_ZEROED_FROM_BYTES / std::mem::size_of::<Slot>();
        let tags: Vec<u32> = (0..entries).map(|_| rng.random()).collect();
        let mut grown = ClickIndex::default();
        let mut reserved = ClickIndex::default();
        reserved.reserve(entries);
        assert!(
            matches!(reserved.table.slots, Slots::Mapped(_)),
            "seed {seed}"
        );
        for (idx, &tag) in tags.iter().enumerate() {
            grown.insert_unique(tag, idx as u32);
            reserved.insert_unique(tag, idx as u32);
        }
        assert!(matches!(grown.table.slots, Slots::Mapped(_)), "seed {seed}");
        for (idx, &tag) in tags.iter().enumerate() {
            let idx = idx as u32;
            assert_eq!(grown.find(tag, |i| i == idx), Some(idx), "seed {seed}");
            assert_eq!(reserved.find(tag, |i| i == idx), Some(idx), "seed {seed}");
        }
        assert_eq!(grown.find(0, |_| false), None);
    }
}
