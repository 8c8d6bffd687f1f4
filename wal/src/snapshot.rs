//! Snapshot files: a checksummed blob that stands for every record below its LSN.
//!
//! Layout: a 32-byte header (magic, format version, LSN, data length, CRC32C of the header
//! and the data) followed by the data. Written atomically by `Storage::create` (temp file,
//! sync, rename, directory sync), so a snapshot that fails its checksum was damaged at rest.

use std::io;

use crate::storage::FileSink;
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
    combined_checksum(header, crc32c::crc32c(data), data.len() as u64)
}

/// [`checksum`] from the data's own CRC32C and length, as a streamed file has them.
fn combined_checksum(header: &[u8], data_crc: u32, data_len: u64) -> u32 {
    let crc = crc32c::crc32c(&header[0..12]);
    let crc = crc32c::crc32c_append(crc, &header[16..HEADER_BYTES]);
    // A snapshot is far below `usize::MAX` on any target that holds it in memory.
    crc32c::crc32c_combine(
        crc,
        data_crc,
        usize::try_from(data_len).unwrap_or(usize::MAX),
    )
}

/// The header of a snapshot file whose data is `data_len` bytes with CRC32C `data_crc`;
/// the file is the header, then the data. Layout: magic (8), version (4), CRC (4), LSN
/// (8), data length (8).
fn header(lsn: Lsn, data_len: u64, data_crc: u32) -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&lsn.to_le_bytes());
    header[24..32].copy_from_slice(&data_len.to_le_bytes());
    let crc = combined_checksum(&header, data_crc, data_len);
    header[12..16].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Bytes of a streamed snapshot gathered before they are checksummed and written: an
/// encoder writes field by field, and each of those costs a copy here rather than a
/// checksum call and a write each.
const STREAM_BUFFER_BYTES: usize = 1 << 20;

/// Writes a snapshot file into `sink`: room for the header, the data as `write_data`
/// produces it (in writes of any size: they are gathered, then checksummed on the way),
/// then the header. Returns the data's length.
pub(crate) fn write_streamed(
    sink: &mut dyn FileSink,
    lsn: Lsn,
    write_data: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
) -> io::Result<u64> {
    sink.write_all(&[0; HEADER_BYTES])?;
    let mut data = io::BufWriter::with_capacity(
        STREAM_BUFFER_BYTES,
        Checksummed {
            sink: &mut *sink,
            crc: 0,
            len_bytes: 0,
        },
    );
    write_data(&mut data)?;
    let Checksummed { crc, len_bytes, .. } = data.into_inner().map_err(|e| e.into_error())?;
    sink.write_at(0, &header(lsn, len_bytes, crc))?;
    Ok(len_bytes)
}

/// Passes bytes on to a sink, keeping their CRC32C and length.
struct Checksummed<'a> {
    sink: &'a mut dyn FileSink,
    crc: u32,
    len_bytes: u64,
}

impl io::Write for Checksummed<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = self.sink.write(bytes)?;
        let written = &bytes[..n];
        self.crc = crc32c::crc32c_append(self.crc, written);
        self.len_bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sink.flush()
    }
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
