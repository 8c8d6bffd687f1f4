//! Prometheus metrics. The recorder is process-global (the `metrics` facade has one), so it
//! is installed once per process however many servers run in it (integration tests start
//! several); the engine records its own metrics through the same facade.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Requests by route and outcome (the status code).
pub const REQUESTS: &str = "clicktrail_http_requests_total";
/// Request latency by route, in seconds.
pub const LATENCY: &str = "clicktrail_http_request_duration_seconds";
/// Clicks that did not go to a landing page, by reason.
pub const CLICK_REJECTIONS: &str = "clicktrail_click_rejections_total";
/// Browser pixels and impressions answered with the harmless default, by reason.
pub const PIXEL_ERRORS: &str = "clicktrail_pixel_errors_total";
/// Requests being answered right now.
pub const IN_FLIGHT: &str = "clicktrail_http_requests_in_flight";
/// Connections currently served.
pub const CONNECTIONS: &str = "clicktrail_http_connections";

/// Latency buckets from 100 µs to 10 s: a click under group commit takes about a
/// millisecond; anything near the top is a stalled disk.
const LATENCY_BUCKETS_SECS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus handle, installing the recorder on first use. If some other
/// recorder is already installed, metrics go there and `/metrics` renders what ours has
/// (nothing) rather than failing.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_SECS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        } else {
            describe();
        }
        handle
    })
}

fn describe() {
    metrics::describe_counter!(REQUESTS, "HTTP requests by route and outcome");
    metrics::describe_histogram!(LATENCY, metrics::Unit::Seconds, "HTTP request latency");
    metrics::describe_counter!(CLICK_REJECTIONS, "clicks sent to the fallback, by reason");
    metrics::describe_counter!(PIXEL_ERRORS, "bad pixel and impression requests, by reason");
    metrics::describe_gauge!(CONNECTIONS, "open HTTP connections");
    metrics::describe_gauge!(IN_FLIGHT, "HTTP requests being answered");
}

/// The Prometheus text exposition of every metric in the process.
pub fn render() -> String {
    let handle = handle();
    handle.run_upkeep();
    handle.render()
}

pub fn record_request(route: &'static str, status: u16, elapsed: Duration) {
    metrics::counter!(REQUESTS, "route" => route, "outcome" => status_label(status)).increment(1);
    metrics::histogram!(LATENCY, "route" => route).record(elapsed.as_secs_f64());
}

pub fn click_rejected(reason: &'static str) {
    metrics::counter!(CLICK_REJECTIONS, "reason" => reason).increment(1);
}

pub fn pixel_error(route: &'static str, reason: &'static str) {
    metrics::counter!(PIXEL_ERRORS, "route" => route, "reason" => reason).increment(1);
}

/// Status codes as static labels, so the label set stays bounded and allocation-free.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        302 => "302",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        414 => "414",
        431 => "431",
        503 => "503",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

/// Counts a request in [`IN_FLIGHT`] for as long as it lives, including when the client
/// goes away and the request's future is dropped half-way.
pub struct InFlight(());

impl InFlight {
    pub fn start() -> InFlight {
        metrics::gauge!(IN_FLIGHT).increment(1.0);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(IN_FLIGHT).decrement(1.0);
    }
}
