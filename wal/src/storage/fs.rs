//! Real files: preallocated with fallocate, written through a shared memory mapping.
//!
//! This is the one module of the workspace allowed `unsafe`: mapping a file and calling
//! `fallocate`/`flock`.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{MmapMut, MmapOptions};

use super::{out_of_range, FileBytes, FileSink, MappedFile, Storage};

/// Name of the lock file that keeps two processes from writing one log.
const LOCK_FILE: &str = "LOCK";

/// A log directory on the real file system.
#[derive(Debug)]
pub struct FsStorage {
    dir: PathBuf,
    /// Held for the storage's lifetime (an exclusive `flock`); `None` when read-only.
    _lock: Option<File>,
    read_only: bool,
}

impl FsStorage {
    /// Opens `dir` for writing, creating it if needed, and takes its exclusive lock so a
    /// second writer fails fast instead of corrupting the log.
    pub fn open(dir: &Path) -> io::Result<FsStorage> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            return Err(io::Error::new(
                err.kind(),
                format!(
                    "log directory {} is locked by another process: {err}",
                    dir.display()
                ),
            ));
        }
        Ok(FsStorage {
            dir: dir.to_path_buf(),
            _lock: Some(lock),
            read_only: false,
        })
    }

    /// Opens `dir` for reading only: no lock, and every modifying call fails. Used by the
    /// operator tools, which must never change a log.
    pub fn open_read_only(dir: &Path) -> io::Result<FsStorage> {
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not a directory", dir.display()),
            ));
        }
        Ok(FsStorage {
            dir: dir.to_path_buf(),
            _lock: None,
            read_only: true,
        })
    }

    /// Creates a segment file durably (see [`Storage::create`]); `zero_fill` writes real
    /// zeros after `head` (see [`write_zeros`]).
    fn create_file(
        &self,
        name: &str,
        size_bytes: u64,
        head: &[u8],
        zero_fill: bool,
    ) -> io::Result<()> {
        self.create_via_tmp(name, |file| {
            let size_bytes = size_bytes.max(head.len() as u64).max(1);
            allocate(file, size_bytes)?;
            let mut writer = BulkWriter::new(file);
            writer.write(head)?;
            if zero_fill {
                write_zeros(&mut writer, size_bytes)?;
            }
            Ok(())
        })
    }

    /// Fills a temporary file with `fill`, syncs it, renames it to `name` and syncs the
    /// directory; on failure the temporary file goes.
    fn create_via_tmp(
        &self,
        name: &str,
        fill: impl FnOnce(&File) -> io::Result<()>,
    ) -> io::Result<()> {
        self.check_writable()?;
        let tmp = self.dir.join(format!("{name}.tmp"));
        let result = (|| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            fill(&file)?;
            file.sync_all()?;
            std::fs::rename(&tmp, self.dir.join(name))?;
            self.sync_dir()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Maps `name` shared and writable, first allocating it to `size_bytes` if shorter.
    fn map(&self, name: &str, size_bytes: u64, populate: Populate) -> io::Result<MappedSegment> {
        self.check_writable()?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join(name))?;
        if file.metadata()?.len() < size_bytes {
            allocate(&file, size_bytes)?;
            file.sync_all()?;
        }
        let len = usize::try_from(size_bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment too large"))?;
        let mut options = MmapOptions::new();
        options.len(len);
        if populate == Populate::Read {
            // Faults the pages in now (on the preparing thread, for new segments) rather
            // than one by one during appends; each still takes a write fault when first
            // written.
            options.populate();
        }
        // SAFETY: the file is at least `len` bytes long with its blocks allocated (above, or
        // by `create`), so page faults in the mapping cannot hit a hole. Only this process
        // writes it (the directory lock), and the log never shortens a mapped file:
        // `remove` shortens only segments it has forgotten, whose mapping, if one is still
        // waiting to be unmapped, is never read or written again. An outside
        // truncation would be a SIGBUS, as with any mmap user (ripgrep accepts the
        // same).
        let map = unsafe { options.map_mut(&file)? };
        if populate == Populate::Write {
            // Best effort: before Linux 5.14 this fails with EINVAL and appends take the
            // faults instead, which is slower but correct.
            let _ = map.advise_range(memmap2::Advice::PopulateWrite, 0, len);
        }
        Ok(MappedSegment {
            map,
            file: Arc::new(FileSync(file)),
        })
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "log opened read-only",
            ));
        }
        Ok(())
    }
}

/// Allocates real blocks for `0..size_bytes` of `file`, extending it. Never sparse: a page
/// fault on a sparse mapping of a full disk is a SIGBUS, an allocation failure is an error.
fn allocate(file: &File, size_bytes: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(size_bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file size too large"))?;
    // SAFETY: fallocate on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
        return Err(err);
    }
    // The file system cannot fallocate (e.g. some network file systems): posix_fallocate
    // writes zeros instead, which is slower but still allocates.
    // SAFETY: as above.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Bytes a bulk write (a snapshot, a new segment's zeros) leaves unsynced at most.
///
/// Such files are written by background threads while the log's owner commits small
/// groups, and a group's sync waits behind whatever the disk was handed before it. A C
/// probe (`benches/io/sync_beside_bulk.c`: an fdatasync of 5 KB appended through a mapping
/// every 0.5 ms, beside a 115 MB file written like a snapshot) on this machine's virtio
/// disk, three alternated runs: written at once and synced at the end, the probe's
/// slowest sync took 57-72 ms (~0.13 ms typical) and the write 303-337 ms; written in
/// 1 MiB steps, each synced before the next, 4.5 / 12 / 40 ms (the disk's own noise
/// reaches such figures too) and 105-114 ms. On a disk with a volatile cache each step's
/// sync also flushes that cache, so a group's flush never carries more than a step of
/// bulk data.
const BULK_SYNC_EVERY_BYTES: u64 = 1 << 20;

/// Bytes a removal frees at a time.
///
/// On a file system mounted with `discard` (as this machine's ext4 is), the blocks of a
/// deleted file are discarded on the disk when the journal commits, and a group commit's
/// sync waits behind them: deleting a 115 MB file and committing took the slowest sync
/// of a C probe beside it (`benches/io/sync_beside_bulk.c`, an fdatasync every 0.5 ms) to
/// 24-27 ms, three runs out of three; shortening the file 8 MiB at a time, each step
/// synced, then deleting it, to 7 / 7 / 22 ms (alternated runs; the disk's own noise
/// reaches such figures too).
const REMOVE_STEP_BYTES: u64 = 8 << 20;

/// Writes a file front to back, syncing its data at every [`BULK_SYNC_EVERY_BYTES`]
/// boundary of the file, so that no more than that is ever queued for the disk at once.
struct BulkWriter<'a> {
    file: &'a File,
    /// Where the next write goes.
    at: u64,
}

impl<'a> BulkWriter<'a> {
    fn new(file: &'a File) -> Self {
        BulkWriter { file, at: 0 }
    }

    fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let to_boundary = BULK_SYNC_EVERY_BYTES - self.at % BULK_SYNC_EVERY_BYTES;
            // At most `bytes.len()`, so the cast cannot truncate.
            let n = to_boundary.min(bytes.len() as u64) as usize;
            self.file.write_all_at(&bytes[..n], self.at)?;
            self.at += n as u64;
            bytes = &bytes[n..];
            if self.at.is_multiple_of(BULK_SYNC_EVERY_BYTES) {
                self.file.sync_data()?;
            }
        }
        Ok(())
    }
}

/// A [`FileSink`] for [`Storage::create_streamed`] over a [`BulkWriter`]. It writes what
/// it is given as it comes: the snapshot writer above it gathers small writes first
/// (see `snapshot::write_streamed`).
struct BulkSink<'a>(BulkWriter<'a>);

impl io::Write for BulkSink<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.write(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FileSink for BulkSink<'_> {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let end = offset.saturating_add(bytes.len() as u64);
        if end > self.0.at {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "write_at {offset}..{end} past the {} bytes written",
                    self.0.at
                ),
            ));
        }
        self.0.file.write_all_at(bytes, offset)
    }
}

/// Writes real zeros from the writer's position up to `to`. Fallocated blocks are
/// "unwritten" extents: the first write to each converts it, which costs a journal
/// transaction on the page fault and makes every sync commit the journal. Writing the
/// zeros once, while the segment is prepared in the background, makes later appends plain
/// overwrites: cheaper faults and syncs that only write data.
///
/// The zeros go in one page per call, because the page cache sizes its folios by the write
/// that creates them (ext4 has large folios since Linux 6.x), and a store through the
/// mapping dirties the whole folio it lands in. Zeroed in 1 MiB writes, every group-commit
/// sync of a few KiB of records wrote back about 1 MiB (2,058 sectors per sync, against 18
/// with page-sized folios; 330 µs per sync instead of 110 µs on the CI machine's disk).
fn write_zeros(writer: &mut BulkWriter<'_>, to: u64) -> io::Result<()> {
    /// Bytes per write: one page, so that each page is its own folio (see above).
    const PAGE_BYTES: u64 = 4096;
    let zeros = [0u8; PAGE_BYTES as usize];
    while writer.at < to {
        // Up to the next page boundary, so that no write spans two pages (the writer's
        // sync boundaries are whole pages too).
        let page_end = (writer.at / PAGE_BYTES + 1) * PAGE_BYTES;
        let n = page_end.min(to) - writer.at;
        // `n` is at most a page, so the cast cannot truncate.
        writer.write(&zeros[..n as usize])?;
    }
    Ok(())
}

impl Storage for FsStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Ok(name) = entry.file_name().into_string() {
                    names.push(name);
                }
            }
        }
        Ok(names)
    }

    fn read(&self, name: &str, max_bytes: u64) -> io::Result<Vec<u8>> {
        let file = File::open(self.dir.join(name))?;
        let len = file.metadata()?.len().min(max_bytes);
        let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.take(max_bytes).read_to_end(&mut out)?;
        Ok(out)
    }

    fn read_segment(&self, name: &str, max_bytes: u64) -> io::Result<FileBytes> {
        if self.read_only {
            // Without the lock, another process might truncate the file under a mapping
            // (a SIGBUS); the operator tools copy instead.
            return Ok(Box::new(self.read(name, max_bytes)?));
        }
        let file = File::open(self.dir.join(name))?;
        let len = usize::try_from(file.metadata()?.len().min(max_bytes))
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large"))?;
        if len == 0 {
            return Ok(Box::new(Vec::new()));
        }
        // SAFETY: a read-only mapping of at most the file's current length. This process
        // holds the directory lock, and the only files it shortens are those it removes
        // (see `remove`): segments the log has forgotten and `.tmp` leftovers, never one
        // recovery is reading, so the file cannot shrink under the mapping.
        let map = unsafe { MmapOptions::new().len(len).map(&file)? };
        Ok(Box::new(map))
    }

    fn create(&self, name: &str, size_bytes: u64, head: &[u8]) -> io::Result<()> {
        self.create_file(name, size_bytes, head, true)
    }

    fn create_streamed(
        &self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn FileSink) -> io::Result<()>,
    ) -> io::Result<()> {
        self.create_via_tmp(name, |file| write(&mut BulkSink(BulkWriter::new(file))))
    }

    /// Allocated but not zeroed: prefaulting a page of an unwritten extent zero-fills it
    /// in memory without reading the disk, on the preparing thread, and the zeros are
    /// never written at all where records overwrite them first.
    fn create_prefaulted(
        &self,
        name: &str,
        size_bytes: u64,
        head: &[u8],
    ) -> io::Result<Box<dyn MappedFile>> {
        self.create_file(name, size_bytes, head, false)?;
        let segment = self.map(name, size_bytes, Populate::Write)?;
        Ok(Box::new(segment))
    }

    fn open_mapped(&self, name: &str, size_bytes: u64) -> io::Result<Box<dyn MappedFile>> {
        Ok(Box::new(self.map(name, size_bytes, Populate::Read)?))
    }

    /// A file over [`REMOVE_STEP_BYTES`] is first renamed to a `.tmp` name (garbage that
    /// opening the log deletes, should a crash come before the end), then shortened a
    /// step at a time, each step synced, and only then unlinked (see
    /// [`REMOVE_STEP_BYTES`]).
    fn remove(&self, name: &str) -> io::Result<()> {
        self.check_writable()?;
        let path = self.dir.join(name);
        let file = OpenOptions::new().write(true).open(&path)?;
        let mut len_bytes = file.metadata()?.len();
        if len_bytes <= REMOVE_STEP_BYTES {
            return std::fs::remove_file(path);
        }
        let path = if name.ends_with(".tmp") {
            path
        } else {
            let garbage = self.dir.join(format!("{name}.tmp"));
            std::fs::rename(&path, &garbage)?;
            // Durable before the file shrinks: a crash must never leave a shortened file
            // under a log file's name.
            self.sync_dir()?;
            garbage
        };
        // Only files no longer mapped are removed (segments and snapshots the log has
        // forgotten, leftovers of a crash), so shortening one cannot fault a mapping.
        while len_bytes > REMOVE_STEP_BYTES {
            len_bytes -= REMOVE_STEP_BYTES;
            file.set_len(len_bytes)?;
            file.sync_all()?;
        }
        std::fs::remove_file(path)
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.check_writable()?;
        File::open(&self.dir)?.sync_all()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// How a mapping's pages are faulted in before use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Populate {
    /// Mapped read-only in the page tables: the first write to each page still faults.
    Read,
    /// Mapped writable and dirty: appends take no faults.
    Write,
}

/// A segment mapped shared and writable.
struct MappedSegment {
    map: MmapMut,
    /// The mapped file, for syncs from another thread.
    file: Arc<FileSync>,
}

/// Syncs a mapped file with fdatasync. On Linux `msync(MS_SYNC)` of a shared mapping is
/// `fdatasync` restricted to the range (both end in `vfs_fsync_range`), and nothing but
/// the log's appended range is ever dirty, so syncing the whole file costs the same.
struct FileSync(File);

impl super::RangeSync for FileSync {
    fn sync_range(&self, _offset: usize, _len: usize) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl MappedFile for MappedSegment {
    fn len(&self) -> usize {
        self.map.len()
    }

    fn write_at(&mut self, offset: usize, data: &[u8]) -> io::Result<()> {
        let file_len = self.map.len();
        let dst = offset
            .checked_add(data.len())
            .and_then(|end| self.map.get_mut(offset..end))
            .ok_or_else(|| out_of_range(offset, data.len(), file_len))?;
        dst.copy_from_slice(data);
        Ok(())
    }

    fn sync_range(&mut self, offset: usize, len: usize) -> io::Result<()> {
        // msync(MS_SYNC) of the page-aligned range: writes the dirty pages and, on Linux,
        // what metadata is needed to read them back (as fdatasync does).
        self.map.flush_range(offset, len)
    }

    fn sync_handle(&self) -> Arc<dyn super::RangeSync> {
        self.file.clone()
    }
}
