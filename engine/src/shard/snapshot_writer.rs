//! A shard snapshot's file, written on a thread of its own.
//!
//! Encoding the state has to happen on the actor (it reads the state), but writing the
//! file and syncing it took about as long again: 67 of 143 ms for a shard of a million
//! clicks, with every answer of the shard waiting. The actor hands the encoded bytes to
//! this thread and goes on; at a later batch (or at shutdown) it tells the log that the
//! snapshot is durable, and the log then deletes the older snapshot and segments.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The thread's result: the snapshot's LSN and how long writing it took.
type Written = Result<(wal::Lsn, Duration), wal::Error>;

pub struct SnapshotWriter {
    thread: Option<JoinHandle<Written>>,
}

impl SnapshotWriter {
    pub fn start(shard: usize, pending: wal::PendingSnapshot) -> std::io::Result<Self> {
        let thread = std::thread::Builder::new()
            .name(format!("shard-snap-{shard:03}"))
            .spawn(move || {
                let started = Instant::now();
                pending.run().map(|lsn| (lsn, started.elapsed()))
            })?;
        Ok(SnapshotWriter {
            thread: Some(thread),
        })
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the file to be written and synced.
    pub fn wait(mut self) -> Written {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(written)) => written,
            _ => Err(std::io::Error::other("the snapshot writer thread panicked").into()),
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
