//! A simulated disk for tests: it keeps synced and unsynced bytes apart, can "lose power",
//! and injects faults (ENOSPC on allocation, EIO on sync).
//!
//! Model: every file has a cache view (what reads and the mapping see) and a durable view
//! (what survives a crash). Writes dirty whole pages of the cache; `sync_range` copies dirty
//! pages in its range to the durable view. Directory changes (links from `create`, unlinks
//! from `remove`) are durable after `sync_dir`. A crash keeps the durable view plus, for each
//! unsynced page, one of: nothing, the whole page, or a random subset of its 512-byte sectors
//! (a torn write; sectors themselves are atomic, as disks guarantee), and a random prefix of
//! the directory changes not yet synced.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::{Rng, SeedableRng};

use super::{out_of_range, FileSink, MappedFile, RangeSync, Storage};

/// Granularity of dirty tracking and of loss at a crash: an OS page.
const PAGE_BYTES: usize = 4096;
/// Granularity of a torn page: a disk sector, written atomically.
const SECTOR_BYTES: usize = 512;
const _: () = assert!(PAGE_BYTES.is_multiple_of(SECTOR_BYTES));

/// Faults to inject, counted from the moment the plan is set with `SimDisk::set_faults`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// After this many more successful allocations (creating or growing a file), every
    /// allocation fails with `ENOSPC` (a full disk). `Some(0)`: fail from now on.
    pub enospc_after_allocations: Option<u64>,
    /// After this many more successful syncs (data or directory), every sync fails with
    /// `EIO`. `Some(0)`: fail from now on.
    pub eio_after_syncs: Option<u64>,
}

#[derive(Debug, Default, Clone)]
struct SimFile {
    cache: Vec<u8>,
    durable: Vec<u8>,
    dirty_pages: BTreeSet<usize>,
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(String, u64),
    Unlink(String),
}

#[derive(Debug, Default)]
struct State {
    next_inode: u64,
    files: BTreeMap<u64, SimFile>,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    pending_dir_ops: Vec<DirOp>,
    faults: FaultPlan,
    allocations: u64,
    syncs: u64,
}

impl State {
    fn allocate(&mut self) -> io::Result<()> {
        if self
            .faults
            .enospc_after_allocations
            .is_some_and(|n| self.allocations >= n)
        {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.allocations += 1;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        if self.faults.eio_after_syncs.is_some_and(|n| self.syncs >= n) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.syncs += 1;
        Ok(())
    }

    fn apply(names: &mut BTreeMap<String, u64>, op: &DirOp) {
        match op {
            DirOp::Link(name, inode) => {
                names.insert(name.clone(), *inode);
            }
            DirOp::Unlink(name) => {
                names.remove(name);
            }
        }
    }

    fn inode(&self, name: &str) -> io::Result<u64> {
        self.names.get(name).copied().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no file {name} on the sim disk"),
            )
        })
    }
}

/// An in-memory disk; clones share it.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the fault plan and restarts its counters.
    pub fn set_faults(&self, plan: FaultPlan) {
        let mut state = self.lock();
        state.faults = plan;
        state.allocations = 0;
        state.syncs = 0;
    }

    /// Loses power: returns the disk as a reboot would find it, chosen by `seed`. This disk
    /// is left as it was (drop the log that uses it).
    pub fn crash(&self, seed: u64) -> SimDisk {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let state = self.lock();
        let mut names = state.durable_names.clone();
        let keep_ops = rng.random_range(0..=state.pending_dir_ops.len());
        for op in &state.pending_dir_ops[..keep_ops] {
            State::apply(&mut names, op);
        }
        let mut files = BTreeMap::new();
        for &inode in names.values() {
            let Some(file) = state.files.get(&inode) else {
                continue;
            };
            let mut bytes = file.durable.clone();
            for &page in &file.dirty_pages {
                let start = page * PAGE_BYTES;
                let end = (start + PAGE_BYTES).min(bytes.len()).min(file.cache.len());
                if start >= end {
                    continue;
                }
                match rng.random_range(0..3u8) {
                    0 => {}
                    1 => bytes[start..end].copy_from_slice(&file.cache[start..end]),
                    _ => {
                        for sector in (start..end).step_by(SECTOR_BYTES) {
                            if rng.random_bool(0.5) {
                                let sector_end = (sector + SECTOR_BYTES).min(end);
                                bytes[sector..sector_end]
                                    .copy_from_slice(&file.cache[sector..sector_end]);
                            }
                        }
                    }
                }
            }
            files.insert(
                inode,
                SimFile {
                    cache: bytes.clone(),
                    durable: bytes,
                    dirty_pages: BTreeSet::new(),
                },
            );
        }
        SimDisk {
            state: Arc::new(Mutex::new(State {
                next_inode: state.next_inode,
                files,
                names: names.clone(),
                durable_names: names,
                ..State::default()
            })),
        }
    }

    /// Names of the files on the disk, sorted.
    pub fn file_names(&self) -> Vec<String> {
        self.lock().names.keys().cloned().collect()
    }

    /// The current (cache) contents of a file.
    pub fn file(&self, name: &str) -> Option<Vec<u8>> {
        let state = self.lock();
        let inode = state.names.get(name)?;
        state.files.get(inode).map(|f| f.cache.clone())
    }

    /// Replaces a file's contents durably (tests use it to damage a log at rest).
    pub fn set_file(&self, name: &str, bytes: &[u8]) {
        let mut state = self.lock();
        let inode = match state.names.get(name) {
            Some(&inode) => inode,
            None => {
                state.next_inode += 1;
                let inode = state.next_inode;
                state.names.insert(name.to_string(), inode);
                state.durable_names.insert(name.to_string(), inode);
                inode
            }
        };
        state.files.insert(
            inode,
            SimFile {
                cache: bytes.to_vec(),
                durable: bytes.to_vec(),
                dirty_pages: BTreeSet::new(),
            },
        );
    }
}

impl Storage for SimDisk {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.file_names())
    }

    fn read(&self, name: &str, max_bytes: u64) -> io::Result<Vec<u8>> {
        let state = self.lock();
        let inode = state.inode(name)?;
        let cache = state.files.get(&inode).map_or(&[][..], |f| &f.cache[..]);
        let len = usize::try_from(max_bytes)
            .unwrap_or(usize::MAX)
            .min(cache.len());
        Ok(cache[..len].to_vec())
    }

    fn create(&self, name: &str, size_bytes: u64, head: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        state.allocate()?;
        state.sync()?;
        let len = usize::try_from(size_bytes)
            .unwrap_or(usize::MAX)
            .max(head.len());
        let mut bytes = vec![0u8; len];
        bytes[..head.len()].copy_from_slice(head);
        state.next_inode += 1;
        let inode = state.next_inode;
        state.files.insert(
            inode,
            SimFile {
                cache: bytes.clone(),
                durable: bytes,
                dirty_pages: BTreeSet::new(),
            },
        );
        state.names.insert(name.to_string(), inode);
        state
            .pending_dir_ops
            .push(DirOp::Link(name.to_string(), inode));
        drop(state);
        self.sync_dir()
    }

    /// Built in memory, then created as [`Storage::create`] creates a file (with the same
    /// faults).
    fn create_streamed(
        &self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn FileSink) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut sink = VecSink(Vec::new());
        write(&mut sink)?;
        self.create(name, sink.0.len() as u64, &sink.0)
    }

    fn open_mapped(&self, name: &str, size_bytes: u64) -> io::Result<Box<dyn MappedFile>> {
        let mut state = self.lock();
        let inode = state.inode(name)?;
        let len = usize::try_from(size_bytes).unwrap_or(usize::MAX);
        let short = state.files.get(&inode).is_some_and(|f| f.cache.len() < len);
        if short {
            state.allocate()?;
            if let Some(file) = state.files.get_mut(&inode) {
                file.cache.resize(len, 0);
                file.durable.resize(len, 0);
            }
        }
        Ok(Box::new(SimMapped {
            disk: self.clone(),
            inode,
            len,
        }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut state = self.lock();
        state.inode(name)?;
        state.names.remove(name);
        state.pending_dir_ops.push(DirOp::Unlink(name.to_string()));
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.lock();
        state.sync()?;
        let ops = std::mem::take(&mut state.pending_dir_ops);
        for op in &ops {
            State::apply(&mut state.durable_names, op);
        }
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from("sim").join(name)
    }

    fn prepare_in_background(&self) -> bool {
        false
    }
}

/// A simulated mapping of one file.
#[derive(Clone)]
struct SimMapped {
    disk: SimDisk,
    inode: u64,
    len: usize,
}

impl MappedFile for SimMapped {
    fn len(&self) -> usize {
        self.len
    }

    fn write_at(&mut self, offset: usize, data: &[u8]) -> io::Result<()> {
        let mut state = self.disk.lock();
        let Some(file) = state.files.get_mut(&self.inode) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "sim file removed"));
        };
        let end = offset
            .checked_add(data.len())
            .filter(|&end| end <= file.cache.len() && end <= self.len)
            .ok_or_else(|| out_of_range(offset, data.len(), self.len))?;
        file.cache[offset..end].copy_from_slice(data);
        if end > offset {
            file.dirty_pages
                .extend(offset / PAGE_BYTES..=(end - 1) / PAGE_BYTES);
        }
        Ok(())
    }

    fn sync_range(&mut self, offset: usize, len: usize) -> io::Result<()> {
        RangeSync::sync_range(&*self, offset, len)
    }

    fn sync_handle(&self) -> std::sync::Arc<dyn RangeSync> {
        std::sync::Arc::new(self.clone())
    }
}

impl RangeSync for SimMapped {
    fn sync_range(&self, offset: usize, len: usize) -> io::Result<()> {
        let mut state = self.disk.lock();
        state.sync()?;
        let Some(file) = state.files.get_mut(&self.inode) else {
            return Ok(());
        };
        if len == 0 {
            return Ok(());
        }
        let first = offset / PAGE_BYTES;
        let last = (offset + len - 1) / PAGE_BYTES;
        let pages: Vec<usize> = file.dirty_pages.range(first..=last).copied().collect();
        for page in pages {
            let start = page * PAGE_BYTES;
            let end = (start + PAGE_BYTES).min(file.cache.len());
            let (cache, durable) = (&file.cache, &mut file.durable);
            durable[start..end].copy_from_slice(&cache[start..end]);
            file.dirty_pages.remove(&page);
        }
        Ok(())
    }
}

/// A [`FileSink`] into memory.
struct VecSink(Vec<u8>);

impl io::Write for VecSink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FileSink for VecSink {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let file_len = self.0.len();
        let at = usize::try_from(offset).unwrap_or(usize::MAX);
        match self.0.get_mut(at..at.saturating_add(bytes.len())) {
            Some(range) => {
                range.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(out_of_range(at, bytes.len(), file_len)),
        }
    }
}
