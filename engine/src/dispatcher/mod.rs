//! The dispatcher actor: fires server-side pixels and webhooks with retries (SPEC 5.1).
//! It holds no durable state of its own: the engine persists each delivery with its
//! conversion before submitting it, and persists every `AttemptReport` it gets back; after a
//! restart the engine resubmits every pending delivery with its attempt count.
//!
//! Shape: one actor task owns every job the dispatcher holds. Jobs that are not yet due
//! wait in a binary heap ordered by due time, behind a single timer (so tens of thousands of
//! pending retries cost one heap entry each, not one timer each). Due jobs join their host's
//! lane; the actor starts attempts round-robin over lanes, at most
//! [`DispatchOptions::max_in_flight`] overall and [`DispatchOptions::max_in_flight_per_host`]
//! per host (scheme, host, port), so a slow or dead host holds a few slots and never the
//! queue of another host. Each attempt runs in its own task (see `client`) and hands its
//! result back to the actor, which reports it, and schedules the retry or forgets the job.
//!
//! Bounds: the actor holds at most [`DispatchOptions::max_queued_jobs`] jobs (scheduled,
//! queued and in flight together). [`Dispatcher::try_submit`] hands a job back beyond that;
//! the delivery stays pending in the engine's log and resumes at the next restart or replay.

mod client;
mod guard;

pub use client::{sign as webhook_signature, MAX_RESPONSE_BODY_BYTES};
pub use guard::is_forbidden_target;

use crate::clock::{Clock, UnixMs};
use crate::config::{DispatchConfig, HttpMethod};
use client::{Answer, Client, ErrorClass, Target};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

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
///
/// `result` strings are the HTTP status (`"500"`) when the target answered, else the error
/// class: `connect`, `timeout`, `dns`, `tls`, `protocol` (retried), `blocked_target`,
/// `invalid_url`, `invalid_secret` (failed at once), `internal` (the attempt task panicked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptReport {
    pub delivery_id: String,
    /// 1-based number of this attempt.
    pub attempt: u32,
    pub started_ms: UnixMs,
    pub latency_ms: u64,
    pub outcome: AttemptOutcome,
}

/// Overall in-flight attempts: enough to keep a busy network's postbacks flowing while
/// bounding sockets and memory (each attempt holds one connection and 64 KiB at most).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// In-flight attempts per host: a dead or slow affiliate holds at most this many of the
/// overall slots, and no single affiliate's server is hammered by us.
pub const DEFAULT_MAX_IN_FLIGHT_PER_HOST: usize = 8;
/// Jobs the actor holds at once. A job is about 1 KiB (URL, JSON body, ids), so this caps
/// the dispatcher near 100 MiB even when every target is down for a day; the engine's log
/// keeps anything beyond it pending.
pub const DEFAULT_MAX_QUEUED_JOBS: usize = 100_000;
/// SPEC 5.1: connect timeout 2 s.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// A target's `Retry-After` is honoured up to one hour: longer would let one answer park a
/// delivery beyond the operator's own schedule.
pub const DEFAULT_RETRY_AFTER_MAX_MS: u64 = 3_600_000;
/// How long `shutdown` waits for attempts in flight. Attempts still running then are
/// abandoned; their deliveries stay pending and resume after the restart (at-least-once).
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 2_000;
/// Jitter applied to every scheduled retry delay (SPEC 5.1: ±10 %), so retries of many
/// deliveries to one recovering host do not arrive in lockstep.
const RETRY_JITTER: f64 = 0.10;

/// Settings beyond `DispatchConfig`, with production defaults; tests shorten them.
#[derive(Clone, Debug)]
pub struct DispatchOptions {
    /// When set, replaces `retry_schedule_secs` with delays in milliseconds (tests).
    pub retry_schedule_ms: Option<Vec<u64>>,
    pub connect_timeout_ms: u64,
    pub max_in_flight: usize,
    pub max_in_flight_per_host: usize,
    pub max_queued_jobs: usize,
    /// Upper bound on the delay a `Retry-After` answer (to a 429 or 503, in seconds) can
    /// impose: the retry waits for the longer of the schedule's delay and the delay the
    /// target asked for, capped at this.
    pub retry_after_max_ms: u64,
    pub shutdown_grace_ms: u64,
    /// Seeds the retry jitter; `None` seeds from the OS.
    pub jitter_seed: Option<u64>,
}

impl Default for DispatchOptions {
    fn default() -> Self {
        Self {
            retry_schedule_ms: None,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_in_flight_per_host: DEFAULT_MAX_IN_FLIGHT_PER_HOST,
            max_queued_jobs: DEFAULT_MAX_QUEUED_JOBS,
            retry_after_max_ms: DEFAULT_RETRY_AFTER_MAX_MS,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            jitter_seed: None,
        }
    }
}

enum Command {
    Submit(DeliveryJob),
    Shutdown(oneshot::Sender<()>),
}

/// A cheap-to-clone handle to the dispatcher actor.
#[derive(Clone)]
pub struct Dispatcher {
    commands: mpsc::UnboundedSender<Command>,
    /// Jobs the actor holds (submitted and not yet delivered, failed or dropped).
    held_jobs: Arc<AtomicUsize>,
    max_queued_jobs: usize,
}

impl Dispatcher {
    /// Starts the actor on the current tokio runtime; every attempt's report is sent on
    /// `reports`.
    pub fn spawn(
        config: DispatchConfig,
        clock: Arc<dyn Clock>,
        reports: tokio::sync::mpsc::UnboundedSender<AttemptReport>,
    ) -> Dispatcher {
        Self::spawn_with(config, DispatchOptions::default(), clock, reports)
    }

    /// [`Dispatcher::spawn`] with explicit options (short schedules and limits in tests).
    pub fn spawn_with(
        config: DispatchConfig,
        options: DispatchOptions,
        clock: Arc<dyn Clock>,
        reports: mpsc::UnboundedSender<AttemptReport>,
    ) -> Dispatcher {
        let (commands, receiver) = mpsc::unbounded_channel();
        let held_jobs = Arc::new(AtomicUsize::new(0));
        let schedule_ms = options.retry_schedule_ms.clone().unwrap_or_else(|| {
            config
                .retry_schedule_secs
                .iter()
                .map(|s| s.saturating_mul(1000))
                .collect()
        });
        let client = Client::new(
            config.allow_private_targets,
            Duration::from_millis(options.connect_timeout_ms),
            Duration::from_millis(config.timeout_ms.max(1)),
            options.max_in_flight_per_host.max(1),
        );
        let actor = Actor {
            rng: match options.jitter_seed {
                Some(seed) => StdRng::seed_from_u64(seed),
                None => StdRng::from_os_rng(),
            },
            max_in_flight: options.max_in_flight.max(1),
            max_in_flight_per_host: options.max_in_flight_per_host.max(1),
            retry_after_max_ms: options.retry_after_max_ms,
            shutdown_grace: Duration::from_millis(options.shutdown_grace_ms),
            schedule_ms,
            client: Arc::new(client),
            clock,
            reports,
            held_jobs: held_jobs.clone(),
            scheduled: BinaryHeap::new(),
            next_seq: 0,
            lanes: HashMap::new(),
            ready: VecDeque::new(),
            attempts: JoinSet::new(),
            running: HashMap::new(),
        };
        tokio::spawn(actor.run(receiver));
        Dispatcher {
            commands,
            held_jobs,
            max_queued_jobs: options.max_queued_jobs,
        }
    }

    /// Queues a delivery; the first attempt goes at `not_before_ms` (at once when past).
    /// A job refused by [`Dispatcher::try_submit`] is logged and counted, and stays pending
    /// in the engine's log.
    pub fn submit(&self, job: DeliveryJob) {
        if let Err(job) = self.try_submit(job) {
            metrics::counter!("clicktrail_dispatch_jobs_refused_total").increment(1);
            tracing::warn!(
                delivery_id = %job.id,
                "dispatcher full or stopped; the delivery stays pending until restart or replay"
            );
        }
    }

    /// Queues a delivery, or hands it back when the dispatcher already holds
    /// `max_queued_jobs` jobs or has shut down.
    pub fn try_submit(&self, job: DeliveryJob) -> Result<(), DeliveryJob> {
        if self.held_jobs.fetch_add(1, Ordering::SeqCst) >= self.max_queued_jobs {
            self.held_jobs.fetch_sub(1, Ordering::SeqCst);
            return Err(job);
        }
        match self.commands.send(Command::Submit(job)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(command)) => {
                self.held_jobs.fetch_sub(1, Ordering::SeqCst);
                match command {
                    Command::Submit(job) => Err(job),
                    // Not what was sent; nothing to hand back.
                    Command::Shutdown(_) => Ok(()),
                }
            }
        }
    }

    /// Jobs the dispatcher holds now: scheduled, queued or in flight.
    pub fn held_jobs(&self) -> usize {
        self.held_jobs.load(Ordering::SeqCst)
    }

    /// Stops taking work and waits (bounded) for attempts in flight.
    pub async fn shutdown(&self) {
        let (ack, done) = oneshot::channel();
        if self.commands.send(Command::Shutdown(ack)).is_ok() {
            // An error means the actor is already gone, which is what we wait for.
            let _ = done.await;
        }
    }
}

/// A job the actor holds, with its parsed target.
struct Job {
    job: DeliveryJob,
    target: Arc<Target>,
}

/// A job waiting for its due time. Ordered by due time, then submission order.
struct Scheduled {
    due: Instant,
    seq: u64,
    job: Job,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// Due jobs of one host and the attempts running against it.
#[derive(Default)]
struct Lane {
    queue: VecDeque<Job>,
    in_flight: usize,
    /// Whether the lane's key is in `Actor::ready`.
    is_ready: bool,
}

/// What an attempt task hands back.
struct Finished {
    job: Job,
    started_ms: UnixMs,
    latency: Duration,
    result: Result<Answer, ErrorClass>,
}

struct Actor {
    rng: StdRng,
    max_in_flight: usize,
    max_in_flight_per_host: usize,
    retry_after_max_ms: u64,
    shutdown_grace: Duration,
    /// Entry i is the delay before retry i + 1, in milliseconds.
    schedule_ms: Vec<u64>,
    client: Arc<Client>,
    clock: Arc<dyn Clock>,
    reports: mpsc::UnboundedSender<AttemptReport>,
    held_jobs: Arc<AtomicUsize>,
    scheduled: BinaryHeap<Reverse<Scheduled>>,
    next_seq: u64,
    lanes: HashMap<Arc<str>, Lane>,
    /// Lanes with queued jobs and a free per-host slot, served round-robin.
    ready: VecDeque<Arc<str>>,
    attempts: JoinSet<Finished>,
    /// Which delivery each running attempt task carries, to account for a task that panics.
    running: HashMap<tokio::task::Id, (Arc<str>, String, u32)>,
}

impl Actor {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        let ack = loop {
            if let Some(Reverse(head)) = self.scheduled.peek() {
                if timer.deadline() != head.due {
                    timer.as_mut().reset(head.due);
                }
            }
            tokio::select! {
                Some(joined) = self.attempts.join_next_with_id(), if !self.attempts.is_empty() => {
                    self.finish(joined);
                }
                command = commands.recv() => match command {
                    Some(Command::Submit(job)) => self.accept(job),
                    Some(Command::Shutdown(ack)) => break Some(ack),
                    // Every handle is gone: nobody can submit or wait any more.
                    None => break None,
                },
                () = &mut timer, if !self.scheduled.is_empty() => self.release_due(),
            }
            self.start_attempts();
        };
        // Whatever raced the shutdown into the channel is dropped (and un-counted) too.
        commands.close();
        let mut acks: Vec<_> = ack.into_iter().collect();
        let mut dropped = 0;
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Submit(_) => dropped += 1,
                Command::Shutdown(ack) => acks.push(ack),
            }
        }
        self.forget(dropped);
        self.stop().await;
        for ack in acks {
            let _ = ack.send(());
        }
    }

    /// Drops every job not in flight, waits up to the grace period for the attempts in
    /// flight (reporting them), and abandons the rest.
    async fn stop(&mut self) {
        let mut dropped = self.scheduled.len();
        self.scheduled.clear();
        for lane in self.lanes.values_mut() {
            dropped += lane.queue.len();
            lane.queue.clear();
        }
        self.ready.clear();
        self.forget(dropped);
        let grace_deadline = Instant::now() + self.shutdown_grace;
        while !self.attempts.is_empty() {
            match tokio::time::timeout_at(grace_deadline, self.attempts.join_next_with_id()).await {
                Ok(Some(joined)) => self.finish(joined),
                Ok(None) | Err(_) => break,
            }
        }
        let abandoned = self.attempts.len();
        self.attempts.shutdown().await;
        self.forget(abandoned);
        metrics::gauge!("clicktrail_dispatch_in_flight").set(0.0);
        if abandoned > 0 {
            tracing::info!(
                abandoned,
                "dispatcher stopped; abandoned attempts resume after restart"
            );
        }
    }

    /// The actor no longer holds `count` jobs.
    fn forget(&self, count: usize) {
        if count > 0 {
            self.held_jobs.fetch_sub(count, Ordering::SeqCst);
        }
        metrics::gauge!("clicktrail_dispatch_held_jobs")
            .set(self.held_jobs.load(Ordering::SeqCst) as f64);
    }

    fn accept(&mut self, job: DeliveryJob) {
        let target = match Target::parse(&job.url) {
            Ok(target) => Arc::new(target),
            Err(class) => {
                // Nothing to dial: the attempt fails where it stands.
                let attempt = job.attempts_made.saturating_add(1);
                self.report(
                    &job.id,
                    attempt,
                    self.clock.now_ms(),
                    Duration::ZERO,
                    AttemptOutcome::Failed {
                        result: class.as_str().to_string(),
                    },
                );
                metrics::counter!("clicktrail_dispatch_attempts_total", "result" => class.as_str())
                    .increment(1);
                metrics::counter!("clicktrail_dispatch_deliveries_total", "state" => "failed")
                    .increment(1);
                self.forget(1);
                return;
            }
        };
        let delay_ms = job.not_before_ms.saturating_sub(self.clock.now_ms());
        self.schedule(Job { job, target }, delay_ms);
    }

    fn schedule(&mut self, job: Job, delay_ms: u64) {
        if delay_ms == 0 {
            self.enqueue(job);
        } else {
            let due = Instant::now() + Duration::from_millis(delay_ms);
            self.next_seq += 1;
            self.scheduled.push(Reverse(Scheduled {
                due,
                seq: self.next_seq,
                job,
            }));
        }
    }

    fn release_due(&mut self) {
        let now = Instant::now();
        while self.scheduled.peek().is_some_and(|Reverse(s)| s.due <= now) {
            if let Some(Reverse(scheduled)) = self.scheduled.pop() {
                self.enqueue(scheduled.job);
            }
        }
    }

    fn enqueue(&mut self, job: Job) {
        let key = job.target.key.clone();
        let lane = self.lanes.entry(key.clone()).or_default();
        lane.queue.push_back(job);
        if !lane.is_ready && lane.in_flight < self.max_in_flight_per_host {
            lane.is_ready = true;
            self.ready.push_back(key);
        }
    }

    /// Starts attempts round-robin over ready lanes while overall slots are free.
    fn start_attempts(&mut self) {
        while self.attempts.len() < self.max_in_flight {
            let Some(key) = self.ready.pop_front() else {
                break;
            };
            let Some(lane) = self.lanes.get_mut(&key) else {
                continue;
            };
            if lane.in_flight >= self.max_in_flight_per_host {
                // Not reachable by the ready-list invariant; the bound holds regardless.
                lane.is_ready = false;
                continue;
            }
            let Some(job) = lane.queue.pop_front() else {
                lane.is_ready = false;
                continue;
            };
            lane.in_flight += 1;
            if !lane.queue.is_empty() && lane.in_flight < self.max_in_flight_per_host {
                self.ready.push_back(key.clone());
            } else {
                lane.is_ready = false;
            }
            let attempt = job.job.attempts_made.saturating_add(1);
            let delivery_id = job.job.id.clone();
            let client = self.client.clone();
            let clock = self.clock.clone();
            let handle = self.attempts.spawn(async move {
                let started_ms = clock.now_ms();
                let started = Instant::now();
                let result = client
                    .attempt(&job.target, &job.job, started_ms / 1000)
                    .await;
                Finished {
                    job,
                    started_ms,
                    latency: started.elapsed(),
                    result,
                }
            });
            self.running
                .insert(handle.id(), (key, delivery_id, attempt));
        }
        metrics::gauge!("clicktrail_dispatch_in_flight").set(self.attempts.len() as f64);
    }

    fn finish(&mut self, joined: Result<(tokio::task::Id, Finished), tokio::task::JoinError>) {
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let Some((key, delivery_id, attempt)) = self.running.remove(&id) else {
            return;
        };
        self.release_slot(&key);
        let finished = match joined {
            Ok((_, finished)) => finished,
            Err(e) => {
                // A panic in the HTTP stack: record it rather than lose the delivery silently.
                tracing::error!(%delivery_id, error = %e, "dispatcher: attempt task failed");
                self.report(
                    &delivery_id,
                    attempt,
                    self.clock.now_ms(),
                    Duration::ZERO,
                    AttemptOutcome::Failed {
                        result: "internal".to_string(),
                    },
                );
                self.forget(1);
                return;
            }
        };
        let label = match finished.result {
            Ok(answer) => status_class(answer.status),
            Err(class) => class.as_str(),
        };
        metrics::counter!("clicktrail_dispatch_attempts_total", "result" => label).increment(1);
        metrics::histogram!("clicktrail_dispatch_attempt_latency_seconds")
            .record(finished.latency.as_secs_f64());

        let (result, retryable, retry_after_secs) = match finished.result {
            Ok(answer) if (200..300).contains(&answer.status) => {
                self.report(
                    &delivery_id,
                    attempt,
                    finished.started_ms,
                    finished.latency,
                    AttemptOutcome::Delivered {
                        status: answer.status,
                    },
                );
                metrics::counter!("clicktrail_dispatch_deliveries_total", "state" => "delivered")
                    .increment(1);
                self.forget(1);
                return;
            }
            Ok(answer) => (
                answer.status.to_string(),
                matches!(answer.status, 408 | 429 | 500..=599),
                answer
                    .retry_after_secs
                    .filter(|_| matches!(answer.status, 429 | 503)),
            ),
            Err(class) => (class.as_str().to_string(), class.is_retryable(), None),
        };
        let delay_ms = if retryable {
            self.retry_delay_ms(attempt, retry_after_secs)
        } else {
            None
        };
        match delay_ms {
            Some(delay_ms) => {
                let next_attempt_ms = self.clock.now_ms().saturating_add(delay_ms);
                self.report(
                    &delivery_id,
                    attempt,
                    finished.started_ms,
                    finished.latency,
                    AttemptOutcome::Retrying {
                        result,
                        next_attempt_ms,
                    },
                );
                let mut job = finished.job;
                job.job.attempts_made = attempt;
                job.job.not_before_ms = next_attempt_ms;
                self.schedule(job, delay_ms);
            }
            None => {
                self.report(
                    &delivery_id,
                    attempt,
                    finished.started_ms,
                    finished.latency,
                    AttemptOutcome::Failed { result },
                );
                metrics::counter!("clicktrail_dispatch_deliveries_total", "state" => "failed")
                    .increment(1);
                self.forget(1);
            }
        }
    }

    /// One attempt against the lane ended: free its slot and make the lane ready again.
    fn release_slot(&mut self, key: &Arc<str>) {
        let Some(lane) = self.lanes.get_mut(key) else {
            return;
        };
        lane.in_flight = lane.in_flight.saturating_sub(1);
        if lane.queue.is_empty() {
            if lane.in_flight == 0 {
                self.lanes.remove(key);
            }
        } else if !lane.is_ready {
            lane.is_ready = true;
            self.ready.push_back(key.clone());
        }
    }

    /// The delay before the retry after attempt number `attempt` (1-based), or `None` when
    /// the schedule is exhausted. A `Retry-After` lengthens the delay, up to the bound.
    fn retry_delay_ms(&mut self, attempt: u32, retry_after_secs: Option<u64>) -> Option<u64> {
        let index = usize::try_from(attempt).ok()?.checked_sub(1)?;
        let base_ms = *self.schedule_ms.get(index)?;
        let factor = self
            .rng
            .random_range((1.0 - RETRY_JITTER)..=(1.0 + RETRY_JITTER));
        let jittered_ms = (base_ms as f64 * factor) as u64;
        let asked_ms = retry_after_secs
            .map_or(0, |s| s.saturating_mul(1000))
            .min(self.retry_after_max_ms);
        Some(jittered_ms.max(asked_ms))
    }

    fn report(
        &self,
        delivery_id: &str,
        attempt: u32,
        started_ms: UnixMs,
        latency: Duration,
        outcome: AttemptOutcome,
    ) {
        let report = AttemptReport {
            delivery_id: delivery_id.to_string(),
            attempt,
            started_ms,
            latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            outcome,
        };
        if self.reports.send(report).is_err() {
            tracing::warn!(%delivery_id, "dispatcher: nobody listens for attempt reports");
        }
    }
}

/// The metrics label of an answered attempt.
fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}
