//! The dispatcher actor: fires server-side pixels and webhooks with retries (SPEC 5.1).
//! It holds no durable state of its own: the engine persists each delivery with its
//! conversion before submitting it, and persists every `AttemptReport` it gets back; after a
//! restart the engine resubmits every pending delivery with its attempt count.

use crate::clock::{Clock, UnixMs};
use crate::config::{DispatchConfig, HttpMethod};
use std::sync::Arc;

/// One delivery to fire, as the engine recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryJob {
    /// Stable across attempts and restarts; sent as `Idempotency-Key` (and `webhook-id`).
    pub id: String,
    /// The target URL, macros already expanded.
    pub url: String,
    pub method: HttpMethod,
    /// JSON body for POST.
    pub body: Option<Vec<u8>>,
    /// `whsec_<base64>` for Standard Webhooks signatures; `None` unsigned.
    pub webhook_secret: Option<String>,
    /// Attempts already made (0 for a new delivery).
    pub attempts_made: u32,
    /// Earliest time of the next attempt (0 = at once).
    pub not_before_ms: UnixMs,
}

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A 2xx: the delivery is done.
    Delivered { status: u16 },
    /// Retryable (connect error, timeout, 408, 429, 5xx); another attempt is scheduled.
    Retrying {
        result: String,
        next_attempt_ms: UnixMs,
    },
    /// Not retryable, or the schedule is exhausted: the delivery failed.
    Failed { result: String },
}

/// Sent to the engine after every attempt, so it can persist the audit and state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptReport {
    pub delivery_id: String,
    /// 1-based number of this attempt.
    pub attempt: u32,
    pub started_ms: UnixMs,
    pub latency_ms: u64,
    pub outcome: AttemptOutcome,
}

/// A cheap-to-clone handle to the dispatcher actor.
#[derive(Clone)]
pub struct Dispatcher {
    _inner: Arc<()>,
}

impl Dispatcher {
    /// Starts the actor on the current tokio runtime; every attempt's report is sent on
    /// `reports`.
    pub fn spawn(
        _config: DispatchConfig,
        _clock: Arc<dyn Clock>,
        _reports: tokio::sync::mpsc::UnboundedSender<AttemptReport>,
    ) -> Dispatcher {
        todo!()
    }

    /// Queues a delivery; the first attempt goes at `not_before_ms` (at once when past).
    pub fn submit(&self, _job: DeliveryJob) {
        todo!()
    }

    /// Stops taking work and waits (bounded) for attempts in flight.
    pub async fn shutdown(&self) {
        todo!()
    }
}
