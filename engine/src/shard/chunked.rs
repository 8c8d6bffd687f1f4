//! Append-only storage in chunks of a fixed size: a shard's clicks and conversions.
//!
//! Why not one `Vec`: doubling a `Vec` of a million items copies all of them (and
//! page-faults the new buffer in) on the one command that happens to cross the boundary,
//! which stalled a shard's answers for tens of milliseconds at a time (a conversion
//! store of 262 k items took 181 ms to double under mimalloc, which copies where glibc's
//! `realloc` could remap). Chunks never move: growing allocates one more chunk.

use std::sync::Arc;

/// Items `0..len` stored `CHUNK` to a chunk; only the last chunk is partly filled.
///
/// Chunks are shared, copy on write: [`Chunked::share`] hands out a frozen copy of the
/// whole store for the price of one reference count per chunk, so that a snapshot can be
/// built from it on another thread while the shard goes on appending and updating. The
/// first write to a chunk the copy still holds copies that chunk alone (the partly filled
/// last one on the next append, and any other only if an item in it changes).
#[derive(Debug)]
pub struct Chunked<T, const CHUNK: usize> {
    chunks: Vec<Arc<Vec<T>>>,
    len: usize,
}

impl<T, const CHUNK: usize> Default for Chunked<T, CHUNK> {
    fn default() -> Self {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Clone, const CHUNK: usize> Chunked<T, CHUNK> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `item` at index `len()`.
    pub fn push(&mut self, item: T) {
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Arc::new(Vec::with_capacity(CHUNK)));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            writable(chunk).push(item);
            self.len += 1;
        }
    }

    #[inline]
    pub fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }

    #[inline]
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        let chunk = self.chunks.get_mut(i / CHUNK)?;
        if i % CHUNK >= chunk.len() {
            return None;
        }
        writable(chunk).get_mut(i % CHUNK)
    }

    /// The items in index order.
    pub fn iter(&self) -> Iter<'_, T> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// The number of leading items for which `pred` holds, by binary search: the items
    /// must be partitioned by it (all `true` before all `false`), as `slice::partition_point`.
    pub fn partition_point(&self, pred: impl Fn(&T) -> bool) -> usize {
        let (mut low, mut high) = (0, self.len);
        while low < high {
            let mid = low + (high - low) / 2;
            if self.get(mid).is_some_and(&pred) {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low
    }

    /// A copy of the store as it is now, sharing every chunk (see the type's comment).
    pub fn share(&self) -> Self {
        Chunked {
            chunks: self.chunks.clone(),
            len: self.len,
        }
    }

    /// Heap bytes held for items (whole chunks, as allocated).
    pub fn allocation_bytes(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| c.capacity() * std::mem::size_of::<T>())
            .sum()
    }
}

/// The chunk for writing: itself, or first a copy of its own if a shared copy of the store
/// still holds it. The copy keeps a whole chunk's room, so appends never reallocate it.
///
/// Asks `strong_count` (a plain load) rather than `Arc::get_mut` (an atomic
/// compare-and-swap), since no `Weak` of a chunk is ever made: this runs on every click.
/// `make_mut` then finds the chunk unique and hands it out without copying.
fn writable<T: Clone>(chunk: &mut Arc<Vec<T>>) -> &mut Vec<T> {
    if Arc::strong_count(chunk) != 1 {
        let mut own = Vec::with_capacity(chunk.capacity());
        own.extend_from_slice(chunk);
        *chunk = Arc::new(own);
    }
    // Unique now: either it was, or it was just replaced by a fresh copy.
    Arc::make_mut(chunk)
}

/// The items of a [`Chunked`] in index order.
pub type Iter<'a, T> = std::iter::FlatMap<
    std::slice::Iter<'a, Arc<Vec<T>>>,
    std::slice::Iter<'a, T>,
    fn(&'a Arc<Vec<T>>) -> std::slice::Iter<'a, T>,
>;

impl<'a, T: Clone, const CHUNK: usize> IntoIterator for &'a Chunked<T, CHUNK> {
    type Item = &'a T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::Chunked;

    /// Against a `Vec`, across several chunk boundaries.
    #[test]
    fn answers_as_a_vec_does() {
        let mut chunked: Chunked<u32, 4> = Chunked::default();
        let mut reference = Vec::new();
        assert!(chunked.is_empty());
        assert_eq!(chunked.get(0), None);
        for n in 0..19u32 {
            chunked.push(n * 3);
            reference.push(n * 3);
            assert_eq!(chunked.len(), reference.len());
            for i in 0..=reference.len() {
                assert_eq!(chunked.get(i), reference.get(i), "index {i} after {n}");
            }
            assert!(chunked.iter().eq(reference.iter()));
            assert!((&chunked).into_iter().eq(reference.iter()));
        }
        *chunked.get_mut(9).expect("stored") += 1;
        reference[9] += 1;
        assert!(chunked.iter().eq(reference.iter()));
        assert_eq!(chunked.get_mut(19), None);
        // Five chunks of four, allocated whole.
        assert_eq!(chunked.allocation_bytes(), 5 * 4 * 4);
        // Sorted items: the binary search agrees with the slice's.
        for bound in 0..70 {
            assert_eq!(
                chunked.partition_point(|&n| n < bound),
                reference.partition_point(|&n| n < bound),
                "bound {bound}"
            );
        }
    }

    /// A shared copy stays as it was while the store is appended to (in the partly filled
    /// chunk they share, and past it) and changed (in a full chunk they share).
    #[test]
    fn a_shared_copy_keeps_its_moment() {
        let mut chunked: Chunked<u32, 4> = Chunked::default();
        for n in 0..10u32 {
            chunked.push(n);
        }
        let shared = chunked.share();
        for n in 10..15u32 {
            chunked.push(n);
        }
        *chunked.get_mut(1).expect("stored") = 100;
        *chunked.get_mut(9).expect("stored") = 900;
        assert!(shared.iter().copied().eq(0..10));
        assert_eq!(shared.len(), 10);
        let mut expected: Vec<u32> = (0..15).collect();
        expected[1] = 100;
        expected[9] = 900;
        assert!(chunked.iter().eq(expected.iter()));
        // A chunk the copy still holds is copied whole, with a chunk's room.
        assert_eq!(chunked.allocation_bytes(), 4 * 4 * 4);
    }
}
