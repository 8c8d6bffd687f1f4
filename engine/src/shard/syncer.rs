//! A shard's syncer: the thread that makes its log durable, so the shard actor (a task on
//! the HTTP runtime) never waits for a disk.
//!
//! Why a thread of its own: an fdatasync takes from 0.2 ms to several ms here. On the
//! actor's task it would stall every connection of that runtime worker; on the actor's
//! own thread (the first design) every command cost a switch between the HTTP worker and
//! that thread, which was a third of a click's CPU. Now the actor applies a batch, takes
//! its range with `wal::Wal::begin_sync` and sends it here with the batch's deferred
//! replies; while this thread syncs, the actor goes on applying the next batches. Whatever
//! queued up during one sync is folded into the next ([`wal::PendingSync::absorb`]), so the
//! group commit grows with the load by itself.
//!
//! The answers go back to the runtime in one message per sync, to an answering task that
//! sends them from inside the runtime: sent from this thread, each answer woke the HTTP
//! worker on its own (an eventfd write each), several per sync.
//!
//! Order: jobs are finished in the order they were sent, so replies, delivery jobs and the
//! shutdown answer come out in the shard's order, and each sync covers everything before it.

use super::{Deferred, Shared};
use crate::dispatcher::{DeliveryJob, Dispatcher};
use crate::ids::Id;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

/// What waits on one batch's durability.
#[derive(Default)]
pub(super) struct SyncJob {
    /// The batch's range of the log; `None` when the batch needs no sync (reads only, a
    /// policy other than `always`, or the shutdown answer).
    pub pending: Option<wal::PendingSync>,
    /// Answers to send once the fate is known (`true`: durable).
    pub replies: Vec<Deferred>,
    /// Deliveries to hand to the dispatcher once durable (the outbox records are in the
    /// batch).
    pub deliveries: Vec<DeliveryJob>,
    /// Merchant references reserved by the batch, released if it is not durable.
    pub reservations: Vec<((u32, String), Id)>,
}

impl SyncJob {
    /// Sends the answers and, if durable, the deliveries; releases the reservations if not.
    /// Empties the job and keeps its lists' memory (the actor reuses its job when it
    /// answers a batch itself).
    pub fn finish_here(&mut self, durable: bool, shared: &Shared, dispatcher: &Dispatcher) {
        if durable {
            for job in self.deliveries.drain(..) {
                dispatcher.submit(job);
            }
            self.reservations.clear();
        } else {
            for (key, id) in self.reservations.drain(..) {
                shared
                    .merchant_refs
                    .remove_if(&key, |_, (rid, _)| *rid == id);
            }
            self.deliveries.clear();
        }
        for reply in self.replies.drain(..) {
            reply.send(durable);
        }
    }
}

/// The handle the actor holds; dropping it lets the thread finish what was sent and joins
/// it.
pub(super) struct Syncer {
    jobs: Option<mpsc::Sender<SyncJob>>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts the thread, and the answering task on the current tokio runtime.
    pub fn start(
        index: usize,
        shared: Arc<Shared>,
        dispatcher: Dispatcher,
    ) -> std::io::Result<Syncer> {
        let (tx, rx) = mpsc::channel();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Done>();
        let health = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("shard-sync-{index:03}"))
            .spawn(move || run(index, rx, &health, &done_tx))?;
        tokio::spawn(async move {
            while let Some((jobs, durable)) = done_rx.recv().await {
                for mut job in jobs {
                    job.finish_here(durable, &shared, &dispatcher);
                }
            }
        });
        Ok(Syncer {
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues a job. If the thread is gone (it only stops when this handle drops), the job
    /// is finished here as not durable rather than lost.
    pub fn send(&self, job: SyncJob, shared: &Shared, dispatcher: &Dispatcher) {
        let Some(jobs) = &self.jobs else { return };
        if let Err(mpsc::SendError(mut job)) = jobs.send(job) {
            job.finish_here(false, shared, dispatcher);
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Yields of the CPU at most before one sync: each costs about a microsecond when nothing
/// else wants the CPU, so the bound keeps an idle shard's latency.
const GATHER_YIELDS: usize = 4;

/// Takes what is queued, then, while giving the CPU away brings more, that too.
///
/// Why yield: the job that woke this thread came from an HTTP worker that is still
/// applying the requests that arrived with it. Syncing at once would split the load into
/// many small syncs (each one costs CPU in the kernel and a wake-up); giving the CPU back
/// first lets the worker finish what it has, so one sync covers it all. The first yield
/// that brings nothing ends the gathering. Nothing is answered earlier than before.
fn gather(jobs: &mpsc::Receiver<SyncJob>, batch: &mut Vec<SyncJob>) {
    batch.extend(jobs.try_iter());
    for _ in 0..GATHER_YIELDS {
        std::thread::yield_now();
        let before = batch.len();
        batch.extend(jobs.try_iter());
        if batch.len() == before {
            break;
        }
    }
}

/// Jobs whose fate is known, and that fate (`true`: durable).
type Done = (Vec<SyncJob>, bool);

fn run(
    index: usize,
    jobs: mpsc::Receiver<SyncJob>,
    shared: &Shared,
    done: &tokio::sync::mpsc::UnboundedSender<Done>,
) {
    loop {
        let mut batch = match jobs.recv() {
            Ok(first) => vec![first],
            Err(_) => break,
        };
        gather(&jobs, &mut batch);
        let mut sync: Option<wal::PendingSync> = None;
        for job in &mut batch {
            if let Some(pending) = job.pending.take() {
                match &mut sync {
                    Some(earlier) => earlier.absorb(pending),
                    None => sync = Some(pending),
                }
            }
        }
        let durable = match sync.map(wal::PendingSync::run) {
            None | Some(Ok(_)) => true,
            Some(Err(e)) => {
                shared.health.fault(format!("shard {index}: {e}"));
                false
            }
        };
        // Fails only when the runtime is gone (the process is ending): nobody waits.
        let _ = done.send((batch, durable));
    }
}
