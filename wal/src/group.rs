//! Group commit for many producer threads sharing one log: each appends under a lock and
//! sleeps until a sync covers its record; one syncer thread takes everything appended so
//! far, syncs it outside the lock, and wakes exactly the producers it covered.
//!
//! While one sync runs, producers append and queue up behind it, so the batch per sync
//! grows with the load by itself: no record is handed between threads, no timer, no batch
//! size to tune. Each producer sleeps and wakes once per record.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{JoinHandle, Thread};

use crate::{Error, Lsn, Wal, WalStats};

/// A [`Wal`] shared by producer threads, each of which needs its own record durable
/// before it answers ([`GroupCommit::append_durable`]). It syncs whatever the log's
/// [`crate::SyncPolicy`]; a thread of its own runs the syncs.
///
/// A failed sync fails every producer whose record it covered, and every one after it:
/// the log is poisoned, and nothing appended from then on is ever reported durable.
pub struct GroupCommit {
    shared: Arc<Shared>,
    syncer: Option<JoinHandle<()>>,
}

/// What the producers and the syncer thread share.
struct Shared {
    log: Mutex<Log>,
    /// Signals the syncer that a producer is waiting (or that it should stop).
    work: Condvar,
    /// Highest LSN a completed sync covered; producers read it when woken.
    durable_lsn: AtomicU64,
    /// Set (after `Log::failure`) when a sync failed.
    failed: AtomicBool,
}

struct Log {
    wal: Wal,
    /// Producers waiting for a sync that covers their record: all of them appended before
    /// the next sync is taken, so that sync covers every one.
    waiters: Vec<Thread>,
    /// The syncer is waiting on `work` and must be signalled.
    syncer_idle: bool,
    stop: bool,
    /// Why nothing more becomes durable, once a sync failed.
    failure: Option<String>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("durable_lsn", &self.durable_lsn())
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Takes over the log and starts its syncer thread.
    pub fn new(wal: Wal) -> Result<GroupCommit, Error> {
        let shared = Arc::new(Shared {
            durable_lsn: AtomicU64::new(wal.durable_lsn()),
            log: Mutex::new(Log {
                wal,
                waiters: Vec::new(),
                syncer_idle: false,
                stop: false,
                failure: None,
            }),
            work: Condvar::new(),
            failed: AtomicBool::new(false),
        });
        let syncer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("wal-group-commit".into())
                .spawn(move || shared.run_syncer())?
        };
        Ok(GroupCommit {
            shared,
            syncer: Some(syncer),
        })
    }

    /// Appends a record and returns its LSN once a sync covers it. Errors as
    /// [`Wal::append`], plus `Poisoned` when the sync that covered the record (or an
    /// earlier one) failed.
    pub fn append_durable(&self, kind: u8, payload: &[u8]) -> Result<Lsn, Error> {
        let lsn = {
            let mut log = self.shared.lock()?;
            if let Some(reason) = &log.failure {
                return Err(Error::Poisoned(reason.clone()));
            }
            let lsn = log.wal.append(kind, payload)?;
            log.waiters.push(std::thread::current());
            if log.syncer_idle {
                log.syncer_idle = false;
                self.shared.work.notify_one();
            }
            lsn
        };
        // The syncer unparks this thread after the sync covering `lsn` ended; a wake-up
        // for any other reason (an unpark left over from an earlier record) re-checks.
        loop {
            // Read first: the syncer publishes the durable LSN before a failure, so a
            // failure seen here comes with every LSN that was durable before it.
            let failed = self.shared.failed.load(Ordering::Acquire);
            if self.shared.durable_lsn.load(Ordering::Acquire) >= lsn {
                return Ok(lsn);
            }
            if failed {
                let reason = self.shared.lock()?.failure.clone().unwrap_or_default();
                return Err(Error::Poisoned(reason));
            }
            std::thread::park();
        }
    }

    /// The highest LSN reported durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.durable_lsn.load(Ordering::Acquire)
    }

    /// The log's counters (`records_appended / syncs` is the mean batch per sync).
    pub fn stats(&self) -> Result<WalStats, Error> {
        Ok(self.shared.lock()?.wal.stats())
    }

    /// Stops the syncer and gives the log back, e.g. to sync it on shutdown.
    pub fn into_inner(mut self) -> Result<Wal, Error> {
        self.stop_syncer();
        let shared = Arc::clone(&self.shared);
        drop(self);
        let shared = Arc::try_unwrap(shared)
            .map_err(|_| Error::InvalidArgument("the log is still shared".into()))?;
        Ok(shared.log.into_inner().map_err(|_| panicked())?.wal)
    }

    fn stop_syncer(&mut self) {
        if let Some(syncer) = self.syncer.take() {
            if let Ok(mut log) = self.shared.lock() {
                log.stop = true;
            }
            self.shared.work.notify_one();
            let _ = syncer.join();
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.stop_syncer();
    }
}

impl Shared {
    fn lock(&self) -> Result<MutexGuard<'_, Log>, Error> {
        // A thread panicked mid-append: what the log holds is unknown, so refuse.
        self.log.lock().map_err(|_| panicked())
    }

    /// The syncer thread: while producers wait, takes what they appended, syncs it with
    /// the lock released (appends go on), and wakes them. Stops when told to, once no
    /// producer waits.
    fn run_syncer(&self) {
        let mut log = self.lock_any();
        loop {
            if self.log.is_poisoned() && log.failure.is_none() {
                // A producer panicked mid-append; the others can no longer lock the log.
                self.fail(&mut log, panicked());
                let waiters = std::mem::take(&mut log.waiters);
                drop(log);
                waiters.iter().for_each(Thread::unpark);
                log = self.lock_any();
            }
            if log.waiters.is_empty() {
                if log.stop {
                    return;
                }
                log.syncer_idle = true;
                log = self.work.wait(log).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Every waiter appended before this, so the sync taken here covers them all.
            let mut wake = std::mem::take(&mut log.waiters);
            let outcome = match log.wal.begin_sync() {
                Ok(Some(pending)) => {
                    drop(log);
                    let outcome = pending.run().map(drop);
                    log = self.lock_any();
                    outcome
                }
                // Nothing left unsynced: a rotation synced it.
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            // The log's own watermark: it covers this sync and any rotation inside an
            // append that synced further.
            self.durable_lsn
                .fetch_max(log.wal.durable_lsn(), Ordering::AcqRel);
            if let Err(e) = outcome {
                self.fail(&mut log, e);
                // Nothing will be durable again: fail whoever waits now, too.
                wake.append(&mut log.waiters);
            }
            // Woken with the lock released, so appends go on meanwhile.
            drop(log);
            wake.iter().for_each(Thread::unpark);
            log = self.lock_any();
        }
    }

    /// Records the first failure; producers see it after the durable LSN published before.
    fn fail(&self, log: &mut Log, e: Error) {
        log.failure.get_or_insert_with(|| match e {
            Error::Poisoned(reason) => reason,
            e => format!("sync failed: {e}"),
        });
        self.failed.store(true, Ordering::Release);
    }

    /// The syncer's lock: it goes on after a producer's panic, to fail the waiters.
    fn lock_any(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn panicked() -> Error {
    Error::Poisoned("a thread panicked while appending to the log".into())
}
