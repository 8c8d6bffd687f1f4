//! Snapshot files: a checksummed blob that stands for every record below its LSN.
//!
//! Layout: a 32-byte header (magic, format version, LSN, data length, CRC32C of the header
//! and the data) followed by the data. Written atomically by `Storage::create` (temp file,
//! sync, rename, directory sync), so a snapshot that fails its checksum was damaged at rest.

use crate::{Lsn, Snapshot};

const MAGIC: [u8; 8] = *b"CTWALSNP";
const FORMAT_VERSION: u32 = 1;
pub(crate) const HEADER_BYTES: usize = 32;

/// How many snapshots are kept: the newest, plus one to fall back to if the newest is
/// found damaged.
pub(crate) const KEEP_SNAPSHOTS: usize = 2;

/// File name of the snapshot at `lsn`; zero-padded so names sort by LSN.
pub(crate) fn snapshot_name(lsn: Lsn) -> String {
    format!("snap-{lsn:020}.snap")
}

/// The LSN of a snapshot file name, if it is one.
pub(crate) fn parse_snapshot_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Checksum of a snapshot file: the header with its CRC field left out, then the data.
fn checksum(header: &[u8], data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&header[0..12]);
    let crc = crc32c::crc32c_append(crc, &header[16..HEADER_BYTES]);
    crc32c::crc32c_append(crc, data)
}

/// The header of a snapshot file whose data is `data`; the file is the header, then the
/// data. Layout: magic (8), version (4), CRC (4), LSN (8), data length (8).
pub(crate) fn header(lsn: Lsn, data: &[u8]) -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&lsn.to_le_bytes());
    header[24..32].copy_from_slice(&(data.len() as u64).to_le_bytes());
    let crc = checksum(&header, data);
    header[12..16].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Decodes and verifies a snapshot file whose name says `lsn`.
pub(crate) fn decode(lsn: Lsn, bytes: &[u8]) -> Result<Snapshot, &'static str> {
    if bytes.len() < HEADER_BYTES {
        return Err("snapshot shorter than its header");
    }
    let (header, data) = bytes.split_at(HEADER_BYTES);
    if header[0..8] != MAGIC {
        return Err("bad snapshot magic");
    }
    let word = |at: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(x)
    };
    if u32::from_le_bytes([header[8], header[9], header[10], header[11]]) != FORMAT_VERSION {
        return Err("unsupported snapshot format version");
    }
    if word(24) != data.len() as u64 {
        return Err("snapshot length mismatch");
    }
    let crc = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    if crc != checksum(header, data) {
        return Err("snapshot checksum mismatch");
    }
    if word(16) != lsn {
        return Err("snapshot LSN does not match its file name");
    }
    Ok(Snapshot {
        lsn,
        data: data.to_vec(),
    })
}
