//! A standing timer that keeps hyper's per-request timers from waking the runtime.
//!
//! hyper arms a header-read timer for every request head it waits for. tokio's timer
//! driver wakes itself (an eventfd write, then an extra trip through epoll) whenever a
//! timer is registered that is due before the driver's next planned wake-up, and "no
//! planned wake-up" counts as later than everything. Under group commit the worker often
//! parks with no timer at all (every connection's head has been read and is waiting for
//! its sync), so the next burst of requests paid one wake-up per request: about a third of
//! a system call per click. A timer that is always pending, due sooner than any header
//! timeout, gives the driver a planned wake-up that new header timers never beat.

use std::time::Duration;

/// Sooner than hyper's header read timeout (10 s), so a new header timer is never the
/// earliest; long enough that its own wake-ups cost nothing.
const PERIOD: Duration = Duration::from_secs(1);

/// Runs the standing timer until dropped.
pub struct TimerAnchor(tokio::task::JoinHandle<()>);

impl TimerAnchor {
    /// Starts it on the current runtime.
    pub fn start() -> TimerAnchor {
        TimerAnchor(tokio::spawn(async {
            loop {
                tokio::time::sleep(PERIOD).await;
            }
        }))
    }
}

impl Drop for TimerAnchor {
    fn drop(&mut self) {
        self.0.abort();
    }
}
