//! Where the log's bytes live, behind a small trait so tests can swap the real files for a
//! simulated disk that loses power and injects faults.
//!
//! The log only needs a flat directory of named files: list, read whole, create durably
//! (preallocated, via a temp file and rename), map for in-place writes with ranged syncs,
//! and remove.

use std::fmt;
use std::io;
use std::path::PathBuf;

mod fs;
mod sim;

pub use fs::FsStorage;
pub use sim::{FaultPlan, SimDisk};

/// The bytes of a file read for recovery: a mapping or a copy.
pub type FileBytes = Box<dyn std::ops::Deref<Target = [u8]> + Send>;

/// A directory of files holding one log.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Names of the files in the directory (no subdirectories), in any order.
    fn list(&self) -> io::Result<Vec<String>>;

    /// Reads the first `max_bytes` (at most) of a file.
    fn read(&self, name: &str, max_bytes: u64) -> io::Result<Vec<u8>>;

    /// Reads the first `max_bytes` (at most) of a segment for recovery. Real files are
    /// mapped read-only rather than copied: recovery reads whole segments.
    fn read_segment(&self, name: &str, max_bytes: u64) -> io::Result<FileBytes> {
        Ok(Box::new(self.read(name, max_bytes)?))
    }

    /// Durably creates (or replaces) `name`, `size_bytes` long, starting with `head` and
    /// zero after it: the space is allocated for real (never sparse, since the file is
    /// mapped), the file synced, then renamed into place and the directory synced. Fails
    /// with `ENOSPC` when the disk is full.
    fn create(&self, name: &str, size_bytes: u64, head: &[u8]) -> io::Result<()>;

    /// Durably creates (or replaces) `name` with what `write` puts into the sink it is
    /// given, front to back, streamed to the file rather than built in memory first (a
    /// snapshot is as large as a shard's state); synced, then renamed into place and the
    /// directory synced, as [`Storage::create`] does. Such a file is never mapped.
    fn create_streamed(
        &self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn FileSink) -> io::Result<()>,
    ) -> io::Result<()>;

    /// Creates a segment as [`Storage::create`] does and maps it with every page already
    /// faulted in writable, so appends into it take no page faults. Its pages count as
    /// dirty from the start and a whole-file sync would write them all: for logs that do
    /// not sync until the segment is full (`SyncPolicy::Never`).
    fn create_prefaulted(
        &self,
        name: &str,
        size_bytes: u64,
        head: &[u8],
    ) -> io::Result<Box<dyn MappedFile>> {
        self.create(name, size_bytes, head)?;
        self.open_mapped(name, size_bytes)
    }

    /// Opens an existing file for in-place writes, first allocating it to `size_bytes` if it
    /// is shorter (a file cut short by an operator or a crash).
    fn open_mapped(&self, name: &str, size_bytes: u64) -> io::Result<Box<dyn MappedFile>>;

    /// Removes a file; durable after the next `sync_dir`.
    fn remove(&self, name: &str) -> io::Result<()>;

    /// Makes renames and removals in the directory durable.
    fn sync_dir(&self) -> io::Result<()>;

    /// The path to name in error messages and reports.
    fn path(&self, name: &str) -> PathBuf;

    /// Whether the next segment should be prepared on a background thread. The simulated
    /// disk says no, so a seed replays identically.
    fn prepare_in_background(&self) -> bool {
        true
    }
}

/// Where [`Storage::create_streamed`] writes a file: appended front to back.
pub trait FileSink: io::Write {
    /// Overwrites bytes already appended, at `offset` (a header known only at the end).
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()>;
}

/// A file open for in-place writes (a shared writable mapping in production).
pub trait MappedFile: Send {
    /// Length of the file, and so the writable range.
    fn len(&self) -> usize;

    /// Whether the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `data` in at `offset`; not durable until a `sync_range` covers it.
    fn write_at(&mut self, offset: usize, data: &[u8]) -> io::Result<()>;

    /// Makes the bytes in `offset..offset + len` durable.
    fn sync_range(&mut self, offset: usize, len: usize) -> io::Result<()>;

    /// A handle that syncs this file from another thread while writes go on (the log's
    /// group commit runs its syncs off the owner's thread). It keeps working after the
    /// mapping is dropped or rotated away.
    fn sync_handle(&self) -> std::sync::Arc<dyn RangeSync>;
}

/// Syncs a range of one file; shareable across threads.
pub trait RangeSync: Send + Sync {
    /// Makes the bytes in `offset..offset + len`, as written before the call, durable.
    fn sync_range(&self, offset: usize, len: usize) -> io::Result<()>;
}

/// An `InvalidInput` error for a write outside a file's range (a bug, reported not panicked).
pub(crate) fn out_of_range(offset: usize, len: usize, file_len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("write of {len} bytes at {offset} past the end of a {file_len}-byte file"),
    )
}
