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

/// Runs `work` on a new thread at the lowest priority (see [`spawn`]) and awaits its
/// result: for an answer whose work grows with the data (a report grouped by sub ID can
/// have a row per click) and so must hold neither a shard's actor nor the async worker
/// that asked, which answer every tracking request meanwhile.
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
