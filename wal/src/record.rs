//! Record framing: the on-disk layout of one record inside a segment.
//!
//! Every record starts at an 8-byte aligned offset with a fixed header:
//!
//! ```text
//! 0..4    header CRC32C over bytes 4..32, seeded with the segment salt
//! 4..8    payload length (u32, little endian)
//! 8..16   LSN (u64)
//! 16..20  payload CRC32C, seeded with the segment salt
//! 20      kind (the owner's record type)
//! 21..24  reserved, zero
//! 24..32  durable LSN: the highest LSN already synced when this record was appended
//! ```
//!
//! followed by the payload, zero-padded to the next 8-byte boundary. Seeding both checksums
//! with the per-segment salt means zeroed or recycled bytes never validate. The durable LSN
//! lets recovery tell a torn tail (nothing after the damage was ever acknowledged) from
//! corruption of a record that a later record proves was already durable.

use crate::Lsn;

/// Size of the fixed record header.
pub(crate) const HEADER_BYTES: usize = 32;
/// Records start at multiples of this, so headers are aligned for the CPU and easy to scan.
pub(crate) const ALIGN_BYTES: usize = 8;
const _: () = assert!(HEADER_BYTES.is_multiple_of(ALIGN_BYTES));

/// Rounds `n` up to the record alignment.
pub(crate) const fn align_up(n: usize) -> usize {
    (n + ALIGN_BYTES - 1) & !(ALIGN_BYTES - 1)
}

/// Bytes a record with a payload of `payload_len` bytes occupies, padding included.
pub(crate) const fn frame_bytes(payload_len: usize) -> usize {
    align_up(HEADER_BYTES + payload_len)
}

/// A decoded, header-checksum-verified record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub lsn: Lsn,
    pub kind: u8,
    pub payload_len: u32,
    pub payload_crc: u32,
    pub durable_lsn: Lsn,
}

/// Encodes the header of a record. Cost: one CRC over the payload and one over 28 bytes.
pub(crate) fn encode_header(
    salt: u32,
    lsn: Lsn,
    kind: u8,
    payload: &[u8],
    durable_lsn: Lsn,
) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    // The caller bounds payloads by `max_record_bytes: u32`, so this cannot truncate.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[8..16].copy_from_slice(&lsn.to_le_bytes());
    h[16..20].copy_from_slice(&crc32c::crc32c_append(salt, payload).to_le_bytes());
    h[20] = kind;
    h[24..32].copy_from_slice(&durable_lsn.to_le_bytes());
    let crc = crc32c::crc32c_append(salt, &h[4..]);
    h[0..4].copy_from_slice(&crc.to_le_bytes());
    h
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Decodes and verifies a header; `None` if it is not a header written with this salt.
/// The cheap field checks run before the checksum so scanning garbage is fast.
pub(crate) fn decode_header(salt: u32, h: &[u8], max_record_bytes: u32) -> Option<Header> {
    if h.len() < HEADER_BYTES || h[21..24] != [0, 0, 0] {
        return None;
    }
    let payload_len = u32_at(h, 4);
    let lsn = u64_at(h, 8);
    let durable_lsn = u64_at(h, 24);
    if payload_len > max_record_bytes || lsn == 0 || durable_lsn >= lsn {
        return None;
    }
    if u32_at(h, 0) != crc32c::crc32c_append(salt, &h[4..HEADER_BYTES]) {
        return None;
    }
    Some(Header {
        lsn,
        kind: h[20],
        payload_len,
        payload_crc: u32_at(h, 16),
        durable_lsn,
    })
}

/// Why a frame failed to read; the text goes into `Error::Corruption::reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Not enough bytes left in the segment for a header.
    NoRoom,
    /// The header does not validate (checksum, reserved bytes, limits).
    BadHeader,
    /// A valid header with a different LSN than the one expected here.
    WrongLsn,
    /// The payload runs past the end of the segment.
    Truncated,
    /// The payload checksum does not match.
    BadPayload,
}

impl FrameError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            FrameError::NoRoom => "segment ends before the expected record",
            FrameError::BadHeader => "record header checksum mismatch",
            FrameError::WrongLsn => "record has an unexpected LSN",
            FrameError::Truncated => "record runs past the end of the segment",
            FrameError::BadPayload => "record payload checksum mismatch",
        }
    }
}

/// Reads and fully verifies the frame at `offset` of a segment's bytes. `expected_lsn` of
/// `None` accepts any LSN (used when scanning for frames after damage).
pub(crate) fn read_frame(
    salt: u32,
    bytes: &[u8],
    offset: usize,
    expected_lsn: Option<Lsn>,
    max_record_bytes: u32,
) -> Result<(Header, &[u8]), FrameError> {
    let end_of_header = offset.checked_add(HEADER_BYTES).ok_or(FrameError::NoRoom)?;
    let h = bytes.get(offset..end_of_header).ok_or(FrameError::NoRoom)?;
    let header = decode_header(salt, h, max_record_bytes).ok_or(FrameError::BadHeader)?;
    if expected_lsn.is_some_and(|lsn| lsn != header.lsn) {
        return Err(FrameError::WrongLsn);
    }
    let payload = bytes
        .get(end_of_header..end_of_header + header.payload_len as usize)
        .ok_or(FrameError::Truncated)?;
    if crc32c::crc32c_append(salt, payload) != header.payload_crc {
        return Err(FrameError::BadPayload);
    }
    Ok((header, payload))
}

/// Finds the next fully valid frame at an aligned offset in `from..bytes.len()` whose LSN is
/// in `lsn_range`. Used only after damage: to resynchronise (lossy recovery) and to decide
/// whether damage in the last segment is a torn tail.
pub(crate) fn find_frame(
    salt: u32,
    bytes: &[u8],
    from: usize,
    lsn_range: std::ops::Range<Lsn>,
    max_record_bytes: u32,
) -> Option<(usize, Header)> {
    let mut offset = align_up(from);
    while offset + HEADER_BYTES <= bytes.len() {
        if let Ok((header, _)) = read_frame(salt, bytes, offset, None, max_record_bytes) {
            if lsn_range.contains(&header.lsn) {
                return Some((offset, header));
            }
        }
        offset += ALIGN_BYTES;
    }
    None
}
