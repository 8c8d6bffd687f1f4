//! Append-only storage in chunks of a fixed size: a shard's clicks and conversions.
//!
//! Why not one `Vec`: doubling a `Vec` of a million items copies all of them (and
//! page-faults the new buffer in) on the one command that happens to cross the boundary,
//! which stalled a shard's answers for tens of milliseconds at a time (a conversion
//! store of 262 k items took 181 ms to double under mimalloc, which copies where glibc's
//! `realloc` could remap). Chunks never move: growing allocates one more chunk.

/// Items `0..len` stored `CHUNK` to a chunk; only the last chunk is partly filled.
#[derive(Debug)]
pub struct Chunked<T, const CHUNK: usize> {
    chunks: Vec<Vec<T>>,
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

impl<T, const CHUNK: usize> Chunked<T, CHUNK> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `item` at index `len()`.
    pub fn push(&mut self, item: T) {
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(item);
            self.len += 1;
        }
    }

    #[inline]
    pub fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }

    #[inline]
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)
    }

    /// The items in index order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    /// Heap bytes held for items (whole chunks, as allocated).
    pub fn allocation_bytes(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| c.capacity() * std::mem::size_of::<T>())
            .sum()
    }
}

impl<'a, T, const CHUNK: usize> IntoIterator for &'a Chunked<T, CHUNK> {
    type Item = &'a T;
    type IntoIter = std::iter::Flatten<std::slice::Iter<'a, Vec<T>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.chunks.iter().flatten()
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
    }
}
