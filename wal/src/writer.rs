//! The single writer: appends into the mapped active segment, syncs per the policy (group
//! commit), rotates to a segment prepared ahead, and writes snapshots.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::clock::{Clock, SystemClock};
use crate::record::{self, HEADER_BYTES};
use crate::recovery::{self, ScanOptions, SegmentMeta};
use crate::segment::{
    self, SegmentHeader, HEADER_PAGE_BYTES, MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES,
};
use crate::snapshot::{self, KEEP_SNAPSHOTS};
use crate::storage::{MappedFile, Storage};
use crate::{Error, Lsn, Options, Recovered, SyncPolicy, WalStats};

/// Zeros used to clear a torn tail, a page at a time.
static ZERO_PAGE: [u8; HEADER_PAGE_BYTES] = [0; HEADER_PAGE_BYTES];

/// A segment created on disk but not yet in use.
struct PreparedSegment {
    /// Already mapped (and its pages faulted in) when prepared in the background.
    file: Option<Box<dyn MappedFile>>,
    name: String,
    salt: u32,
    size_bytes: u64,
}

/// The next segment, being prepared ahead so rotation does not wait for an allocation.
enum Prepared {
    None,
    Pending(JoinHandle<io::Result<PreparedSegment>>),
    Ready(PreparedSegment),
}

pub(crate) struct Writer {
    storage: Arc<dyn Storage>,
    options: Options,
    clock: Arc<dyn Clock>,
    /// The active segment's mapping.
    file: Box<dyn MappedFile>,
    salt: u32,
    /// Where the next record goes in the active segment.
    pos: usize,
    /// Unsynced byte range of the active segment.
    dirty: Option<(usize, usize)>,
    /// Segments in use, in order; the last is the active one.
    segments: Vec<SegmentMeta>,
    prepared: Prepared,
    next_seq: u64,
    next_lsn: Lsn,
    /// Highest LSN covered by a completed sync; stamped into each record header.
    synced_lsn: Lsn,
    unsynced_records: u64,
    /// When the oldest unsynced record was appended (the `Interval` deadline runs from it).
    oldest_unsynced_at: Option<Instant>,
    /// Why the log refuses writes, after a failed sync.
    poisoned: Option<String>,
    stats: WalStats,
    /// LSNs of the snapshot files on disk, ascending.
    snapshot_files: Vec<Lsn>,
}

fn invalid(reason: String) -> Error {
    Error::InvalidArgument(reason)
}

fn validate(options: &Options) -> Result<(), Error> {
    let size = options.segment_size_bytes;
    if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&size) {
        return Err(invalid(format!(
            "segment_size_bytes {size} is outside {MIN_SEGMENT_BYTES}..={MAX_SEGMENT_BYTES}"
        )));
    }
    let largest_frame = record::frame_bytes(options.max_record_bytes as usize) as u64;
    if largest_frame > size - HEADER_PAGE_BYTES as u64 {
        return Err(invalid(format!(
            "max_record_bytes {} does not fit in a segment of {size} bytes",
            options.max_record_bytes
        )));
    }
    if let SyncPolicy::Interval(d) = options.sync {
        if d.is_zero() {
            return Err(invalid(
                "SyncPolicy::Interval needs a non-zero interval".into(),
            ));
        }
    }
    Ok(())
}

impl Writer {
    pub(crate) fn open(
        storage: Arc<dyn Storage>,
        options: Options,
    ) -> Result<(Writer, Recovered), Error> {
        validate(&options)?;
        let scan = recovery::scan(
            &*storage,
            ScanOptions {
                max_record_bytes: options.max_record_bytes,
                mode: options.recovery,
                verify_all: false,
            },
        )?;
        for name in &scan.discard {
            match storage.remove(name) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        if !scan.discard.is_empty() {
            storage.sync_dir()?;
        }
        let mut writer = Writer {
            file: Box::new(NoFile),
            salt: 0,
            pos: HEADER_PAGE_BYTES,
            dirty: None,
            segments: scan.segments,
            prepared: match scan.reusable {
                Some((name, header)) => Prepared::Ready(PreparedSegment {
                    file: None,
                    name,
                    salt: header.salt,
                    size_bytes: header.size_bytes,
                }),
                None => Prepared::None,
            },
            next_seq: scan.next_seq,
            next_lsn: scan.next_lsn,
            synced_lsn: scan.next_lsn.saturating_sub(1),
            unsynced_records: 0,
            oldest_unsynced_at: None,
            poisoned: None,
            stats: WalStats::default(),
            snapshot_files: scan.snapshot_files,
            clock: Arc::new(SystemClock),
            storage,
            options,
        };
        match writer.segments.last().cloned() {
            Some(last) => {
                let mut file = writer
                    .storage
                    .open_mapped(&last.name, last.header.size_bytes)?;
                // Clear what lies after the last good record, so no stale frame can ever
                // follow a new one, and make the recovered records durable: a crashed
                // process may have left them only in the page cache.
                let mut at = scan.tail_offset;
                while at < scan.tail_dirty_end {
                    let n = (scan.tail_dirty_end - at).min(ZERO_PAGE.len());
                    file.write_at(at, &ZERO_PAGE[..n])?;
                    at += n;
                }
                file.sync_range(0, scan.tail_dirty_end.max(scan.tail_offset))?;
                writer.salt = last.header.salt;
                writer.pos = scan.tail_offset;
                writer.file = file;
            }
            None => {
                let prepared = writer.take_prepared()?;
                writer.activate(prepared)?;
            }
        }
        writer.start_preparing();
        if !scan.log.report.dropped.is_empty() {
            // Lossy recovery dropped damaged records, which stay on disk. Appends go to a
            // fresh segment, so once the owner writes a snapshot at `next_lsn()` no damaged
            // segment is needed again and a strict open succeeds.
            writer.rotate()?;
        }
        Ok((writer, scan.log))
    }

    pub(crate) fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
    }

    fn check_poisoned(&self) -> Result<(), Error> {
        match &self.poisoned {
            Some(reason) => Err(Error::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    /// Appends one record: two copies into the mapping and two checksums, no allocation.
    pub(crate) fn append(&mut self, kind: u8, payload: &[u8]) -> Result<Lsn, Error> {
        self.check_poisoned()?;
        if payload.len() > self.options.max_record_bytes as usize {
            return Err(Error::RecordTooLarge {
                len: payload.len(),
                max: self.options.max_record_bytes,
            });
        }
        let frame = record::frame_bytes(payload.len());
        if self.pos + frame > self.file.len() {
            self.rotate()?;
        }
        let lsn = self.next_lsn;
        let header = record::encode_header(self.salt, lsn, kind, payload, self.synced_lsn);
        self.file.write_at(self.pos, &header)?;
        self.file.write_at(self.pos + HEADER_BYTES, payload)?;
        let start = self.pos;
        self.pos += frame;
        self.dirty = Some(match self.dirty {
            Some((from, _)) => (from, self.pos),
            None => (start, self.pos),
        });
        self.next_lsn += 1;
        self.unsynced_records += 1;
        if self.oldest_unsynced_at.is_none() {
            self.oldest_unsynced_at = Some(self.clock.now());
        }
        self.stats.records_appended += 1;
        self.stats.bytes_appended += frame as u64;
        Ok(lsn)
    }

    pub(crate) fn commit(&mut self) -> Result<(), Error> {
        self.check_poisoned()?;
        match self.options.sync {
            SyncPolicy::Always => self.sync(),
            SyncPolicy::Never => Ok(()),
            SyncPolicy::Interval(interval) => match self.oldest_unsynced_at {
                Some(t) if self.clock.now().saturating_duration_since(t) >= interval => self.sync(),
                _ => Ok(()),
            },
        }
    }

    /// Syncs the unsynced range of the active segment (one sync for the whole batch). A
    /// failure poisons the log: the kernel may already have dropped the dirty pages, so a
    /// retry could report success for data that is gone.
    pub(crate) fn sync(&mut self) -> Result<(), Error> {
        self.check_poisoned()?;
        let Some((from, to)) = self.dirty else {
            return Ok(());
        };
        if let Err(e) = self.file.sync_range(from, to - from) {
            let segment = self
                .segments
                .last()
                .map(|s| self.storage.path(&s.name).display().to_string())
                .unwrap_or_default();
            self.poisoned = Some(format!("sync of {segment} failed: {e}"));
            return Err(Error::Io(e));
        }
        self.dirty = None;
        self.synced_lsn = self.next_lsn - 1;
        self.stats.syncs += 1;
        self.stats.last_sync_batch_records = self.unsynced_records;
        self.unsynced_records = 0;
        self.oldest_unsynced_at = None;
        Ok(())
    }

    pub(crate) fn sync_due_in(&self) -> Option<std::time::Duration> {
        let SyncPolicy::Interval(interval) = self.options.sync else {
            return None;
        };
        let oldest = self.oldest_unsynced_at?;
        Some(interval.saturating_sub(self.clock.now().saturating_duration_since(oldest)))
    }

    pub(crate) fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    pub(crate) fn stats(&self) -> WalStats {
        self.stats
    }

    /// Moves to the next segment. The full segment is synced first whatever the policy:
    /// recovery relies on every segment but the last being complete on disk.
    fn rotate(&mut self) -> Result<(), Error> {
        self.sync()?;
        let prepared = self.take_prepared()?;
        self.activate(prepared)?;
        self.start_preparing();
        Ok(())
    }

    /// Makes a prepared segment the active one, assigning its base LSN. The header is
    /// durable with the first sync that covers records in it.
    fn activate(&mut self, prepared: PreparedSegment) -> Result<(), Error> {
        let mut file = match prepared.file {
            Some(file) => file,
            None => self
                .storage
                .open_mapped(&prepared.name, prepared.size_bytes)?,
        };
        let header = SegmentHeader {
            salt: prepared.salt,
            base_lsn: self.next_lsn,
            size_bytes: prepared.size_bytes,
        };
        for (offset, copy) in header.copies() {
            file.write_at(offset, &copy)?;
        }
        self.file = file;
        self.salt = prepared.salt;
        self.pos = HEADER_PAGE_BYTES;
        self.dirty = Some((0, HEADER_PAGE_BYTES));
        self.segments.push(SegmentMeta {
            name: prepared.name,
            header,
        });
        Ok(())
    }

    fn new_prepared(&mut self) -> (PreparedSegment, Vec<u8>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let header = SegmentHeader {
            salt: rand::random(),
            base_lsn: 0,
            size_bytes: self.options.segment_size_bytes,
        };
        let prepared = PreparedSegment {
            file: None,
            name: segment::segment_name(seq),
            salt: header.salt,
            size_bytes: header.size_bytes,
        };
        (prepared, header.encode_page())
    }

    fn prepare_now(&mut self) -> Result<PreparedSegment, Error> {
        let (prepared, page) = self.new_prepared();
        self.storage
            .create(&prepared.name, prepared.size_bytes, &page)?;
        Ok(prepared)
    }

    /// Starts preparing the next segment (in the background when the storage allows). A
    /// failure here is not reported: rotation tries again and reports it.
    fn start_preparing(&mut self) {
        if !matches!(self.prepared, Prepared::None) {
            return;
        }
        if !self.storage.prepare_in_background() {
            if let Ok(prepared) = self.prepare_now() {
                self.prepared = Prepared::Ready(prepared);
            }
            return;
        }
        let (prepared, page) = self.new_prepared();
        let storage = Arc::clone(&self.storage);
        let spawned = std::thread::Builder::new()
            .name("wal-prepare".into())
            .spawn(move || {
                let mut prepared = prepared;
                storage.create(&prepared.name, prepared.size_bytes, &page)?;
                prepared.file = Some(storage.open_mapped(&prepared.name, prepared.size_bytes)?);
                Ok(prepared)
            });
        if let Ok(handle) = spawned {
            self.prepared = Prepared::Pending(handle);
        }
    }

    fn take_prepared(&mut self) -> Result<PreparedSegment, Error> {
        match std::mem::replace(&mut self.prepared, Prepared::None) {
            Prepared::Ready(prepared) => Ok(prepared),
            Prepared::Pending(handle) => match handle.join() {
                Ok(Ok(prepared)) => Ok(prepared),
                Ok(Err(e)) => Err(e.into()),
                Err(_) => Err(Error::Io(io::Error::other("segment preparation panicked"))),
            },
            Prepared::None => self.prepare_now(),
        }
    }

    pub(crate) fn write_snapshot(&mut self, lsn: Lsn, data: &[u8]) -> Result<(), Error> {
        self.check_poisoned()?;
        if lsn == 0 || lsn > self.next_lsn {
            return Err(invalid(format!(
                "snapshot LSN {lsn} is outside 1..={}",
                self.next_lsn
            )));
        }
        // The records the snapshot stands for must be durable before it is, so recovery
        // never finds a snapshot beyond the end of the log.
        self.sync()?;
        let name = snapshot::snapshot_name(lsn);
        let contents = snapshot::encode(lsn, data);
        self.storage
            .create(&name, contents.len() as u64, &contents)?;
        if let Err(i) = self.snapshot_files.binary_search(&lsn) {
            self.snapshot_files.insert(i, lsn);
        }
        let excess = self.snapshot_files.len().saturating_sub(KEEP_SNAPSHOTS);
        for old in self.snapshot_files.drain(..excess) {
            remove_if_present(&*self.storage, &snapshot::snapshot_name(old))?;
        }
        // Keep the segments the older kept snapshot needs, so it is a real fallback if the
        // newest is ever found damaged.
        let floor = self.snapshot_files.first().copied().unwrap_or(lsn);
        let removable = self
            .segments
            .windows(2)
            .take_while(|pair| pair[1].header.base_lsn <= floor)
            .count();
        for old in self.segments.drain(..removable) {
            remove_if_present(&*self.storage, &old.name)?;
        }
        self.storage.sync_dir()?;
        Ok(())
    }
}

fn remove_if_present(storage: &dyn Storage, name: &str) -> Result<(), Error> {
    match storage.remove(name) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Let a preparation in flight finish, so no thread outlives the log's directory.
        if let Prepared::Pending(handle) = std::mem::replace(&mut self.prepared, Prepared::None) {
            let _ = handle.join();
        }
    }
}

/// Placeholder mapping before the first segment is opened.
struct NoFile;

impl MappedFile for NoFile {
    fn len(&self) -> usize {
        0
    }
    fn write_at(&mut self, offset: usize, data: &[u8]) -> io::Result<()> {
        Err(crate::storage::out_of_range(offset, data.len(), 0))
    }
    fn sync_range(&mut self, _offset: usize, _len: usize) -> io::Result<()> {
        Ok(())
    }
}
