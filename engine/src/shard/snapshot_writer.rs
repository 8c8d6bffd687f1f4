//! A shard snapshot's file, written on a thread of its own.
//!
//! Building the snapshot from the shard's state, encoding it, writing the file and syncing
//! it would hold every answer of the shard for as long as they take (281 + 249 ms to build
//! and encode a shard of a million clicks, and about as long again to write it). The actor
//! freezes its state (see [`super::frozen`]) and hands it to this thread, which does the
//! rest while the actor goes on; at a later batch (or at shutdown) the actor tells the log
//! that the snapshot is durable, and the log then deletes the older snapshot and segments.
//!
//! When the actor asks for a compaction, the thread also rebuilds a state from the
//! snapshot it built (see `ShardActor::reap_snapshot`): that rebuild, hundreds of
//! milliseconds at a million clicks, held every answer of the shard when it ran on the
//! actor.

use super::state::ShardState;
use std::thread::JoinHandle;
use std::time::Duration;

/// What the thread did: the snapshot's LSN and size, how long building its parts from the
/// frozen state took and how long encoding and writing them, and what it left out.
pub struct Written {
    pub lsn: wal::Lsn,
    pub bytes: u64,
    pub build: Duration,
    pub write: Duration,
    pub left_out: LeftOut,
}

/// Items of the state a snapshot left out (past their retention).
#[derive(Clone, Copy, Debug, Default)]
pub struct LeftOut {
    pub clicks: usize,
    pub conversions: usize,
    pub impressions: usize,
}

/// What the thread hands back when it is done.
pub struct Done {
    /// The file's fate.
    pub written: Result<Written, wal::Error>,
    /// The state rebuilt from the snapshot, without what it left out, when the actor asked
    /// for a compaction: handed back even if the file could not be written, since shedding
    /// expired items from memory does not depend on it.
    pub compacted: Option<ShardState>,
}

pub struct SnapshotWriter {
    thread: Option<JoinHandle<Done>>,
}

impl SnapshotWriter {
    /// Starts the thread, which runs `job`: it writes the snapshot through `pending` (and
    /// may rebuild a compacted state).
    pub fn start(
        shard: usize,
        pending: wal::PendingSnapshot,
        job: impl FnOnce(wal::PendingSnapshot) -> Done + Send + 'static,
    ) -> std::io::Result<Self> {
        let thread =
            crate::background::spawn(format!("shard-snap-{shard:03}"), move || job(pending))?;
        Ok(SnapshotWriter {
            thread: Some(thread),
        })
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the file to be written and synced (and the compacted state built).
    pub fn wait(mut self) -> Done {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(done)) => done,
            _ => Done {
                written: Err(std::io::Error::other("the snapshot writer thread panicked").into()),
                compacted: None,
            },
        }
    }
}

impl Drop for SnapshotWriter {
    /// The engine was dropped without a shutdown: let the file be finished (it is written
    /// atomically, and the log does not count on it until told), so that no thread
    /// outlives the shard or writes into a directory a new engine has opened.
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
