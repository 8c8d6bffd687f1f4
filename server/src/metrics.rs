//! Prometheus metrics. The recorder is process-global (the `metrics` facade has one), so it
//! is installed once per process however many servers run in it (integration tests start
//! several); the engine records its own metrics through the same facade.

use crate::routes::Route;
use metrics::{Counter, Gauge, Histogram};
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

/// Records one answered request in [`REQUESTS`] and [`LATENCY`].
pub fn record_request(route: Route, status: u16, elapsed: Duration) {
    let slots = &ROUTE_METRICS[route.index()];
    let outcome = status_index(status);
    slots.requests[outcome]
        .get_or_init(|| {
            let _ = handle();
            metrics::counter!(REQUESTS, "route" => route.label(), "outcome" => STATUS_LABELS[outcome])
        })
        .increment(1);
    slots
        .latency
        .get_or_init(|| {
            let _ = handle();
            metrics::histogram!(LATENCY, "route" => route.label())
        })
        .record(elapsed.as_secs_f64());
}

pub fn click_rejected(reason: &'static str) {
    metrics::counter!(CLICK_REJECTIONS, "reason" => reason).increment(1);
}

pub fn pixel_error(route: &'static str, reason: &'static str) {
    metrics::counter!(PIXEL_ERRORS, "route" => route, "reason" => reason).increment(1);
}

/// Status codes as static labels, so the label set stays bounded and allocation-free;
/// [`status_index`] picks one.
const STATUS_LABELS: [&str; 18] = [
    "200", "201", "204", "302", "400", "401", "403", "404", "405", "409", "413", "414", "431",
    "503", "2xx", "3xx", "4xx", "5xx",
];

/// The index of `status`'s label in [`STATUS_LABELS`].
fn status_index(status: u16) -> usize {
    match status {
        200 => 0,
        201 => 1,
        204 => 2,
        302 => 3,
        400 => 4,
        401 => 5,
        403 => 6,
        404 => 7,
        405 => 8,
        409 => 9,
        413 => 10,
        414 => 11,
        431 => 12,
        503 => 13,
        s if s < 300 => 14,
        s if s < 400 => 15,
        s if s < 500 => 16,
        _ => 17,
    }
}

/// The handles of one route's request metrics, each made the first time it is recorded,
/// so `/metrics` lists the same series as when every request named its metric: the
/// `metrics` macros build a key (allocating its labels) and look it up in the registry on
/// every call, which costs more than the request's own parsing.
struct RouteMetrics {
    requests: [OnceLock<Counter>; STATUS_LABELS.len()],
    latency: OnceLock<Histogram>,
}

impl RouteMetrics {
    const fn new() -> Self {
        RouteMetrics {
            requests: [const { OnceLock::new() }; STATUS_LABELS.len()],
            latency: OnceLock::new(),
        }
    }
}

/// Process-wide like the recorder the handles point into ([`handle`] installs it first).
static ROUTE_METRICS: [RouteMetrics; Route::COUNT] = [const { RouteMetrics::new() }; Route::COUNT];

fn gauge(cell: &'static OnceLock<Gauge>, name: &'static str) -> &'static Gauge {
    cell.get_or_init(|| {
        let _ = handle();
        metrics::gauge!(name)
    })
}

/// The [`CONNECTIONS`] gauge.
pub fn connections() -> &'static Gauge {
    static GAUGE: OnceLock<Gauge> = OnceLock::new();
    gauge(&GAUGE, CONNECTIONS)
}

/// Counts a request in [`IN_FLIGHT`] for as long as it lives, including when the client
/// goes away and the request's future is dropped half-way.
pub struct InFlight(&'static Gauge);

impl InFlight {
    pub fn start() -> InFlight {
        static GAUGE: OnceLock<Gauge> = OnceLock::new();
        let gauge = gauge(&GAUGE, IN_FLIGHT);
        gauge.increment(1.0);
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_are_bounded() {
        let cases = [
            (200, "200"),
            (302, "302"),
            (431, "431"),
            (503, "503"),
            (100, "2xx"),
            (206, "2xx"),
            (304, "3xx"),
            (408, "4xx"),
            (500, "5xx"),
            (999, "5xx"),
        ];
        for (status, want) in cases {
            assert_eq!(STATUS_LABELS[status_index(status)], want, "{status}");
        }
    }

    /// Cached handles record into the process's recorder under the same names and labels
    /// the macros used.
    #[test]
    fn cached_handles_record_into_the_prometheus_output() {
        record_request(Route::Healthz, 200, Duration::from_millis(1));
        record_request(Route::Healthz, 200, Duration::from_millis(1));
        drop(InFlight::start());
        let text = render();
        let line = text
            .lines()
            .find(|l| {
                l.starts_with(REQUESTS)
                    && l.contains("route=\"healthz\"")
                    && l.contains("outcome=\"200\"")
            })
            .unwrap_or_else(|| panic!("no healthz 200 counter in {text}"));
        let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(count >= 2.0, "{line}");
        assert!(
            text.contains(&format!("{LATENCY}_count{{route=\"healthz\"}}")),
            "{text}"
        );
        assert!(text.lines().any(|l| l.starts_with(IN_FLIGHT)), "{text}");
    }
}
