//! Segment files: naming and the header page.
//!
//! A segment is a preallocated file `seg-NNNNNNNNNN.wal` (a sequence number, not an LSN)
//! whose first page holds the header and whose records start right after it. A segment is
//! created *unassigned* (base LSN 0) ahead of need; rotation assigns its base LSN by
//! rewriting the header in place. The header is stored twice, in two different 512-byte
//! sectors of the page, so a torn header write (sectors are written atomically) leaves at
//! least one copy that is either the old or the new header, and a single damaged copy is
//! survivable.

use crate::Lsn;

/// The header page; records start at this offset. One OS page, so the header is synced
/// independently of record pages.
pub(crate) const HEADER_PAGE_BYTES: usize = 4096;
/// Offsets of the two header copies: different 512-byte sectors.
const COPY_OFFSETS: [usize; 2] = [0, 512];
/// Encoded size of one header copy.
pub(crate) const HEADER_COPY_BYTES: usize = 40;
const _: () =
    assert!(HEADER_COPY_BYTES <= 512 && COPY_OFFSETS[1] + HEADER_COPY_BYTES <= HEADER_PAGE_BYTES);

const MAGIC: [u8; 8] = *b"CTWALSEG";
/// Bumped on any incompatible change of the segment or record layout.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// Smallest segment accepted: the header page plus room for a few small records.
pub(crate) const MIN_SEGMENT_BYTES: u64 = 8192;
/// Largest segment accepted: bounds the memory a segment read or mapping may take, and
/// rejects absurd sizes from a damaged header.
pub(crate) const MAX_SEGMENT_BYTES: u64 = 1 << 30;

/// The decoded header of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// Seeds every checksum in the segment, so bytes from another segment or an earlier
    /// life of this file never validate.
    pub salt: u32,
    /// LSN of the first record; 0 while the segment is prepared but not yet in use.
    pub base_lsn: Lsn,
    /// Full preallocated size of the file.
    pub size_bytes: u64,
}

impl SegmentHeader {
    fn encode_copy(&self) -> [u8; HEADER_COPY_BYTES] {
        let mut b = [0u8; HEADER_COPY_BYTES];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.salt.to_le_bytes());
        b[16..24].copy_from_slice(&self.base_lsn.to_le_bytes());
        b[24..32].copy_from_slice(&self.size_bytes.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// The whole header page (both copies), ready to be written at offset 0.
    pub(crate) fn encode_page(&self) -> Vec<u8> {
        let mut page = vec![0u8; HEADER_PAGE_BYTES];
        let copy = self.encode_copy();
        for at in COPY_OFFSETS {
            page[at..at + HEADER_COPY_BYTES].copy_from_slice(&copy);
        }
        page
    }

    /// Writes both copies into `page` (the first `HEADER_PAGE_BYTES` of a mapping).
    pub(crate) fn copies(&self) -> [(usize, [u8; HEADER_COPY_BYTES]); 2] {
        let copy = self.encode_copy();
        [(COPY_OFFSETS[0], copy), (COPY_OFFSETS[1], copy)]
    }

    fn decode_copy(b: &[u8]) -> Result<SegmentHeader, &'static str> {
        if b.len() < HEADER_COPY_BYTES {
            return Err("segment shorter than its header");
        }
        if b[0..8] != MAGIC {
            return Err("bad segment magic");
        }
        let crc = u32::from_le_bytes([b[32], b[33], b[34], b[35]]);
        if crc != crc32c::crc32c(&b[0..32]) {
            return Err("segment header checksum mismatch");
        }
        let word = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(x)
        };
        let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if version != FORMAT_VERSION {
            return Err("unsupported segment format version");
        }
        let header = SegmentHeader {
            salt: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
            base_lsn: word(16),
            size_bytes: word(24),
        };
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&header.size_bytes) {
            return Err("segment header has an impossible size");
        }
        Ok(header)
    }

    /// Decodes the header page: an assigned copy wins over an unassigned one (a torn
    /// activation that reached one sector), the first copy wins otherwise.
    pub(crate) fn decode_page(bytes: &[u8]) -> Result<SegmentHeader, &'static str> {
        let a = bytes
            .get(COPY_OFFSETS[0]..)
            .map_or(Err("empty segment"), Self::decode_copy);
        let b = bytes
            .get(COPY_OFFSETS[1]..)
            .map_or(Err("empty segment"), Self::decode_copy);
        match (a, b) {
            (Ok(a), Ok(b)) if a.base_lsn == 0 && b.base_lsn != 0 => Ok(b),
            (Ok(a), _) => Ok(a),
            (Err(_), Ok(b)) => Ok(b),
            (Err(e), Err(_)) => Err(e),
        }
    }
}

/// File name of the segment with sequence number `seq`.
pub(crate) fn segment_name(seq: u64) -> String {
    format!("seg-{seq:010}.wal")
}

/// The sequence number of a segment file name, if it is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".wal")?;
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}
