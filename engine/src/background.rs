//! The threads the engine does slow work on, off the shard actors and off the async
//! workers that answer requests: a shard's housekeeping (writing a snapshot, deleting the
//! files it replaced, freeing a replaced state), and slow admin answers (grouping a report,
//! and the server's formatting of it, see [`run`]).
//!
//! They run at the lowest priority a thread can have without a special scheduling
//! policy, so that the threads that answer requests (the HTTP workers, the actor and its
//! syncer) preempt them whenever they wake. At equal priority a thread woken by its sync
//! could wait out a housekeeping thread's time slice when they shared a CPU: a C probe
//! syncing every 0.5 ms on a CPU shared with a busy loop saw a p99 of 0.8-1.9 ms against
//! 0.14-0.17 ms with the loop at niceness 19 (two runs each, this machine).

use std::io;
use std::thread::JoinHandle;

/// Niceness of housekeeping threads: the lowest priority.
const NICEST: i32 = 19;

/// Runs `work` on a new thread named `name`, at the lowest priority.
pub(crate) fn spawn<T: Send + 'static>(
    name: String,
    work: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    std::thread::Builder::new().name(name).spawn(move || {
        lower_priority();
        work()
    })
}

/// Slow answers ([`run`]) under way at once; more wait for their [`turn`]. Each holds a
/// thread, and frozen tables whose chunks the shards copy on their next change while it
/// runs: a dashboard polling reports, or many clients at once, must not multiply those.
const SLOW_ANSWERS_AT_ONCE: usize = 2;

static SLOW_ANSWERS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(SLOW_ANSWERS_AT_ONCE);

/// Waits for a turn to prepare and [`run`] a slow answer, held until the answer is done:
/// take it before freezing what the answer reads, so that waiting holds nothing. Never
/// nested (a holder waiting for a second turn could wait forever).
pub async fn turn() -> tokio::sync::SemaphorePermit<'static> {
    // The semaphore is never closed, so acquiring only waits.
    loop {
        if let Ok(permit) = SLOW_ANSWERS.acquire().await {
            return permit;
        }
    }
}

/// Runs `work` on a new thread at the lowest priority (see [`spawn`]) and awaits its
/// result: for an answer whose work grows with the data (a report grouped by sub ID can
/// have a row per click) and so must hold neither a shard's actor nor the async worker
/// that asked, which answer every tracking request meanwhile. Callers hold a [`turn`].
pub async fn run<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawn(name.to_string(), move || {
        // The asker may have gone (its client hung up): the result is dropped then.
        let _ = tx.send(work());
    })?;
    rx.await
        .map_err(|_| io::Error::other(format!("thread {name} ended without an answer")))
}

/// Best effort: a thread that keeps its priority only competes more for the CPU.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICEST) {
        tracing::debug!(error = %e, "a housekeeping thread keeps its priority");
    }
}

#[cfg(test)]
mod tests {
    use super::{turn, SLOW_ANSWERS, SLOW_ANSWERS_AT_ONCE};

    /// No turn is given while every one is taken; one is as soon as one comes back.
    #[tokio::test]
    async fn turns_are_bounded() {
        let all = SLOW_ANSWERS
            .acquire_many(SLOW_ANSWERS_AT_ONCE as u32)
            .await
            .expect("never closed");
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let waiter = tokio::spawn(async move {
            let _turn = turn().await;
            let _ = tx.send(());
        });
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(rx.try_recv().is_err(), "a turn was given past the bound");
        drop(all);
        waiter.await.expect("the waiter ends");
        assert!(rx.try_recv().is_ok());
    }
}
