//! The dispatcher (SPEC 5.1) against real HTTP sinks on 127.0.0.1: retries and their
//! schedule, Idempotency-Key, no redirects, timeouts, Retry-After, the SSRF guard, webhook
//! signatures and per-host isolation. Tests await reports on the channel; retry delays are
//! milliseconds, and nothing sleeps to wait.

use base64::Engine as _;
use bytes::Bytes;
use engine::dispatcher::{
    is_forbidden_target, AttemptOutcome, AttemptReport, DeliveryJob, DispatchOptions, Dispatcher,
};
use engine::template::{expand_url, Macros};
use engine::{DispatchConfig, HttpMethod, ManualClock};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// The fake "now" of every test: reports carry it, so expectations are exact.
const NOW_MS: u64 = 1_764_000_000_000;

/// A guard against a broken dispatcher hanging the suite; never a timing expectation.
const STUCK_AFTER: Duration = Duration::from_secs(20);

// ---- the sink ---------------------------------------------------------------------------

/// What the sink answers to one request.
#[derive(Clone, Debug)]
enum Answer {
    Status(u16),
    WithHeader(u16, &'static str, &'static str),
    /// Never answer (the connection stays open).
    Hang,
    /// 200 with a body of this many bytes.
    Big(usize),
}

/// One request as the sink saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path_and_query: String,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// An HTTP/1 server on 127.0.0.1 that answers a script of statuses (then `fallback`) and
/// records every request.
struct Sink {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Sink {
    async fn start(script: Vec<Answer>, fallback: Answer) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let addr = listener.local_addr().expect("sink address");
        let (tx, seen) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (tx, script, fallback) = (tx.clone(), script.clone(), fallback.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (tx, script, fallback) = (tx.clone(), script.clone(), fallback.clone());
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await?.to_bytes().to_vec();
                            let _ = tx.send(Seen {
                                method: parts.method.to_string(),
                                path_and_query: parts
                                    .uri
                                    .path_and_query()
                                    .map_or(String::new(), |p| p.to_string()),
                                headers: parts.headers,
                                body,
                            });
                            let answer = script
                                .lock()
                                .expect("script lock")
                                .pop_front()
                                .unwrap_or(fallback);
                            let mut body = Bytes::from_static(b"ok");
                            let (status, header) = match answer {
                                Answer::Status(s) => (s, None),
                                Answer::WithHeader(s, n, v) => (s, Some((n, v))),
                                Answer::Hang => std::future::pending().await,
                                Answer::Big(size) => {
                                    body = Bytes::from(vec![b'x'; size]);
                                    (200, None)
                                }
                            };
                            let mut response = Response::builder().status(status);
                            if let Some((name, value)) = header {
                                response = response.header(name, value);
                            }
                            Ok::<_, hyper::Error>(
                                response.body(Full::new(body)).expect("sink response"),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Sink {
            addr,
            seen,
            connections,
        }
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    async fn next(&mut self) -> Seen {
        tokio::time::timeout(STUCK_AFTER, self.seen.recv())
            .await
            .expect("the sink saw no request")
            .expect("sink stopped")
    }

    /// Every request seen so far, without waiting.
    fn drain(&mut self) -> Vec<Seen> {
        std::iter::from_fn(|| self.seen.try_recv().ok()).collect()
    }
}

// ---- the dispatcher under test ----------------------------------------------------------

struct Harness {
    dispatcher: Dispatcher,
    reports: mpsc::UnboundedReceiver<AttemptReport>,
}

fn options(schedule_ms: &[u64]) -> DispatchOptions {
    DispatchOptions {
        retry_schedule_ms: Some(schedule_ms.to_vec()),
        shutdown_grace_ms: 50,
        jitter_seed: Some(7),
        ..DispatchOptions::default()
    }
}

fn start(allow_private_targets: bool, timeout_ms: u64, options: DispatchOptions) -> Harness {
    let config = DispatchConfig {
        allow_private_targets,
        timeout_ms,
        ..DispatchConfig::default()
    };
    let (tx, reports) = mpsc::unbounded_channel();
    let dispatcher =
        Dispatcher::spawn_with(config, options, Arc::new(ManualClock::new(NOW_MS)), tx);
    Harness {
        dispatcher,
        reports,
    }
}

impl Harness {
    async fn report(&mut self) -> AttemptReport {
        tokio::time::timeout(STUCK_AFTER, self.reports.recv())
            .await
            .expect("no attempt report")
            .expect("dispatcher stopped reporting")
    }

    /// Stops the dispatcher and returns any reports it had not handed over yet.
    async fn stop(mut self) -> Vec<AttemptReport> {
        self.dispatcher.shutdown().await;
        std::iter::from_fn(|| self.reports.try_recv().ok()).collect()
    }
}

fn get(id: &str, url: String) -> DeliveryJob {
    DeliveryJob {
        id: id.to_string(),
        url,
        method: HttpMethod::Get,
        body: None,
        webhook_secret: None,
        attempts_made: 0,
        not_before_ms: 0,
    }
}

fn retrying(result: &str) -> impl Fn(&AttemptOutcome) -> bool + '_ {
    move |o| matches!(o, AttemptOutcome::Retrying { result: r, .. } if r == result)
}

fn failed(result: &str) -> AttemptOutcome {
    AttemptOutcome::Failed {
        result: result.to_string(),
    }
}

// ---- tests ------------------------------------------------------------------------------

#[tokio::test]
async fn delivered_on_the_third_attempt_with_the_same_idempotency_key() {
    let mut sink = Sink::start(
        vec![Answer::Status(500), Answer::Status(503)],
        Answer::Status(200),
    )
    .await;
    let mut h = start(true, 5_000, options(&[1, 1, 1]));
    h.dispatcher.submit(get("dlv-1", sink.url("/pb?c=1")));

    let first = h.report().await;
    assert_eq!((first.delivery_id.as_str(), first.attempt), ("dlv-1", 1));
    assert!(retrying("500")(&first.outcome), "{first:?}");
    assert_eq!(first.started_ms, NOW_MS);
    let second = h.report().await;
    assert_eq!(second.attempt, 2);
    assert!(retrying("503")(&second.outcome), "{second:?}");
    let third = h.report().await;
    assert_eq!(third.attempt, 3);
    assert_eq!(third.outcome, AttemptOutcome::Delivered { status: 200 });

    for _ in 0..3 {
        let seen = sink.next().await;
        assert_eq!(seen.method, "GET");
        assert_eq!(seen.path_and_query, "/pb?c=1");
        assert_eq!(seen.header("idempotency-key"), "dlv-1");
        assert!(seen.header("user-agent").starts_with("clicktrail"));
    }
    assert!(h.stop().await.is_empty());
    assert!(sink.drain().is_empty(), "no request after delivery");
}

#[tokio::test]
async fn deliveries_to_one_host_reuse_a_kept_alive_connection() {
    let mut sink = Sink::start(vec![], Answer::Status(200)).await;
    let mut h = start(true, 5_000, options(&[1]));
    for i in 0..5 {
        h.dispatcher
            .submit(get(&format!("dlv-{i}"), sink.url("/pb")));
        assert_eq!(
            h.report().await.outcome,
            AttemptOutcome::Delivered { status: 200 }
        );
        assert_eq!(
            sink.next().await.header("idempotency-key"),
            format!("dlv-{i}")
        );
    }
    assert_eq!(
        sink.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    h.stop().await;
}

#[tokio::test]
async fn a_huge_answer_is_cut_off_and_still_counts() {
    let mut sink = Sink::start(vec![Answer::Big(4 << 20)], Answer::Status(200)).await;
    let mut h = start(true, 5_000, options(&[1]));
    h.dispatcher.submit(get("dlv-big", sink.url("/big")));
    assert_eq!(
        h.report().await.outcome,
        AttemptOutcome::Delivered { status: 200 }
    );
    // The cut-off connection is not reused: the next delivery opens a new one.
    h.dispatcher.submit(get("dlv-next", sink.url("/next")));
    assert_eq!(
        h.report().await.outcome,
        AttemptOutcome::Delivered { status: 200 }
    );
    assert_eq!(sink.next().await.path_and_query, "/big");
    assert_eq!(sink.next().await.path_and_query, "/next");
    assert_eq!(
        sink.connections.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    h.stop().await;
}

#[tokio::test]
async fn final_answers_fail_at_once_and_redirects_are_not_followed() {
    // (what the sink answers, the failed result)
    let cases = [
        (Answer::Status(404), "404"),
        (Answer::Status(400), "400"),
        (Answer::Status(410), "410"),
        (Answer::WithHeader(302, "location", "/elsewhere"), "302"),
        (
            Answer::WithHeader(301, "location", "http://127.0.0.1:1/"),
            "301",
        ),
        (Answer::Status(304), "304"),
    ];
    for (answer, want) in cases {
        let mut sink = Sink::start(vec![answer], Answer::Status(200)).await;
        let mut h = start(true, 5_000, options(&[1, 1]));
        h.dispatcher.submit(get("dlv-final", sink.url("/pb")));
        let report = h.report().await;
        assert_eq!(report.attempt, 1);
        assert_eq!(report.outcome, failed(want));
        assert!(
            h.stop().await.is_empty(),
            "{want}: nothing after a final answer"
        );
        let seen = sink.drain();
        assert_eq!(
            seen.len(),
            1,
            "{want}: exactly one request, no redirect followed"
        );
        assert_eq!(seen[0].path_and_query, "/pb");
    }
}

#[tokio::test]
async fn retryable_answers_exhaust_the_schedule_then_fail() {
    for status in [408, 429, 500, 502, 503, 504] {
        let mut sink = Sink::start(vec![], Answer::Status(status)).await;
        let mut h = start(true, 5_000, options(&[1, 1]));
        h.dispatcher.submit(get("dlv-x", sink.url("/")));
        let want = status.to_string();
        for attempt in 1..=2 {
            let report = h.report().await;
            assert_eq!(report.attempt, attempt);
            assert!(retrying(&want)(&report.outcome), "{report:?}");
        }
        let last = h.report().await;
        assert_eq!(
            last.attempt, 3,
            "{status}: one attempt plus one per schedule entry"
        );
        assert_eq!(last.outcome, failed(&want));
        assert!(h.stop().await.is_empty());
        assert_eq!(sink.drain().len(), 3);
    }
}

#[tokio::test]
async fn a_resumed_delivery_continues_its_attempt_count_and_schedule() {
    let mut sink = Sink::start(vec![], Answer::Status(500)).await;
    let mut h = start(true, 5_000, options(&[1, 1]));
    let mut job = get("dlv-resumed", sink.url("/"));
    job.attempts_made = 2;
    job.not_before_ms = NOW_MS - 1;
    h.dispatcher.submit(job);
    let report = h.report().await;
    assert_eq!(report.attempt, 3);
    assert_eq!(
        report.outcome,
        failed("500"),
        "the schedule was already used up"
    );
    h.stop().await;
    assert_eq!(sink.next().await.header("idempotency-key"), "dlv-resumed");
}

#[tokio::test]
async fn retry_delays_follow_the_schedule_with_bounded_jitter() {
    let mut sink = Sink::start(vec![], Answer::Status(500)).await;
    let mut h = start(true, 5_000, options(&[10, 40]));
    h.dispatcher.submit(get("dlv-j", sink.url("/")));
    for base_ms in [10, 40] {
        match h.report().await.outcome {
            AttemptOutcome::Retrying {
                next_attempt_ms, ..
            } => {
                let delay_ms = next_attempt_ms - NOW_MS;
                assert!(
                    (base_ms * 9 / 10..=base_ms * 11 / 10).contains(&delay_ms),
                    "delay {delay_ms} ms for a {base_ms} ms entry"
                );
            }
            other => panic!("expected a retry, got {other:?}"),
        }
    }
    assert_eq!(h.report().await.outcome, failed("500"));
    h.stop().await;
    assert_eq!(sink.drain().len(), 3);
}

#[tokio::test]
async fn too_many_requests_honours_retry_after_within_its_bound() {
    let mut sink = Sink::start(
        vec![
            Answer::WithHeader(429, "retry-after", "3600"),
            Answer::WithHeader(429, "retry-after", "0"),
        ],
        Answer::Status(204),
    )
    .await;
    let mut o = options(&[1, 1]);
    o.retry_after_max_ms = 60;
    let mut h = start(true, 5_000, o);
    h.dispatcher.submit(get("dlv-429", sink.url("/")));
    let first = h.report().await;
    assert_eq!(
        first.outcome,
        AttemptOutcome::Retrying {
            result: "429".to_string(),
            next_attempt_ms: NOW_MS + 60
        },
        "Retry-After: 3600 is honoured up to the 60 ms bound"
    );
    let second = h.report().await;
    match second.outcome {
        AttemptOutcome::Retrying {
            next_attempt_ms, ..
        } => {
            assert!(
                next_attempt_ms - NOW_MS <= 2,
                "Retry-After: 0 keeps the schedule"
            )
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    assert_eq!(
        h.report().await.outcome,
        AttemptOutcome::Delivered { status: 204 }
    );
    h.stop().await;
    assert_eq!(sink.drain().len(), 3);
}

#[tokio::test]
async fn a_sink_that_never_answers_times_out_and_is_retried() {
    let mut sink = Sink::start(vec![], Answer::Hang).await;
    let mut h = start(true, 200, options(&[1]));
    h.dispatcher.submit(get("dlv-slow", sink.url("/")));
    let first = h.report().await;
    assert!(retrying("timeout")(&first.outcome), "{first:?}");
    let second = h.report().await;
    assert_eq!((second.attempt, second.outcome), (2, failed("timeout")));
    h.stop().await;
    let seen = sink.drain();
    assert_eq!(seen.len(), 2);
    assert!(seen
        .iter()
        .all(|s| s.header("idempotency-key") == "dlv-slow"));
}

#[tokio::test]
async fn connection_refused_is_a_retried_connect_error() {
    // Bind then drop: nothing listens on that port any more.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let mut h = start(true, 5_000, options(&[1]));
    h.dispatcher
        .submit(get("dlv-refused", format!("http://127.0.0.1:{port}/")));
    assert!(retrying("connect")(&h.report().await.outcome));
    assert_eq!(h.report().await.outcome, failed("connect"));
    h.stop().await;
}

#[tokio::test]
async fn https_to_a_plain_http_server_is_a_retried_tls_error() {
    let mut sink = Sink::start(vec![], Answer::Status(200)).await;
    let mut h = start(true, 5_000, options(&[1]));
    h.dispatcher.submit(get(
        "dlv-tls",
        format!("https://127.0.0.1:{}/", sink.addr.port()),
    ));
    assert!(retrying("tls")(&h.report().await.outcome));
    assert_eq!(h.report().await.outcome, failed("tls"));
    h.stop().await;
    assert!(sink.drain().is_empty(), "no HTTP request without TLS");
}

struct Hostile(&'static str);

impl Macros for Hostile {
    fn value(&self, name: &str) -> Option<Cow<'_, str>> {
        match name {
            "click_id" => Some(Cow::Borrowed("ck1")),
            "sid1" | "merchant_ref" => Some(Cow::Borrowed(self.0)),
            _ => None,
        }
    }
}

/// Splits a query into decoded `(name, value)` pairs.
fn query_pairs(path_and_query: &str) -> Vec<(String, String)> {
    let query = path_and_query.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .expect("utf-8")
                    .into_owned()
            };
            (decode(name), decode(value))
        })
        .collect()
}

#[tokio::test]
async fn macros_arrive_encoded_and_hostile_values_stay_in_their_parameter() {
    let hostile = [
        "a&admin=1",
        "x#frag",
        "../../etc/passwd",
        "?y=2",
        "user@evil.example:80",
        "http://evil.example/",
        "café ☕ %41",
        "..",
    ];
    let mut sink = Sink::start(vec![], Answer::Status(200)).await;
    let mut h = start(true, 5_000, options(&[1]));
    for (i, value) in hostile.into_iter().enumerate() {
        let template = format!(
            "http://{}/pb/{{sid1}}?c={{ClickID}}&s=[=SID=]&m={{order_id}}",
            sink.addr
        );
        h.dispatcher.submit(get(
            &format!("dlv-{i}"),
            expand_url(&template, &Hostile(value)),
        ));
        assert!(matches!(
            h.report().await.outcome,
            AttemptOutcome::Delivered { .. }
        ));
        let seen = sink.next().await;
        assert_eq!(seen.header("host"), sink.addr.to_string(), "{value}");
        let (path, _) = seen.path_and_query.split_once('?').expect("a query");
        assert_eq!(path.matches('/').count(), 2, "{value}: {path}");
        let decoded_segment = percent_encoding::percent_decode_str(&path["/pb/".len()..])
            .decode_utf8()
            .expect("utf-8");
        assert_eq!(decoded_segment, value);
        assert_eq!(
            query_pairs(&seen.path_and_query),
            vec![
                ("c".to_string(), "ck1".to_string()),
                ("s".to_string(), value.to_string()),
                ("m".to_string(), value.to_string()),
            ],
            "{value}"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn webhook_posts_carry_the_body_and_a_verifiable_signature() {
    use hmac::{Hmac, Mac};
    let key = b"a webhook signing key of 32 bytes";
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    let body = br#"{"conversion_id":"cv1","payout":4.5}"#.to_vec();
    let mut sink = Sink::start(vec![], Answer::Status(202)).await;
    let mut h = start(true, 5_000, options(&[1]));
    h.dispatcher.submit(DeliveryJob {
        method: HttpMethod::Post,
        body: Some(body.clone()),
        webhook_secret: Some(secret),
        ..get("msg_2Kp9", sink.url("/hooks"))
    });
    assert_eq!(
        h.report().await.outcome,
        AttemptOutcome::Delivered { status: 202 }
    );
    let seen = sink.next().await;
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body, body);
    assert_eq!(seen.header("content-type"), "application/json");
    assert_eq!(seen.header("idempotency-key"), "msg_2Kp9");
    assert_eq!(seen.header("webhook-id"), "msg_2Kp9");
    let timestamp = seen.header("webhook-timestamp");
    assert_eq!(timestamp, (NOW_MS / 1000).to_string());

    // Verify as a receiver would, independently of the dispatcher's code.
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("key");
    mac.update(format!("msg_2Kp9.{timestamp}.").as_bytes());
    mac.update(&seen.body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let signatures: Vec<&str> = seen.header("webhook-signature").split(' ').collect();
    assert_eq!(signatures, vec![format!("v1,{expected}").as_str()]);
    h.stop().await;
}

#[tokio::test]
async fn an_unusable_webhook_secret_fails_the_delivery_at_once() {
    let mut sink = Sink::start(vec![], Answer::Status(200)).await;
    let mut h = start(true, 5_000, options(&[1]));
    h.dispatcher.submit(DeliveryJob {
        method: HttpMethod::Post,
        body: Some(b"{}".to_vec()),
        webhook_secret: Some("whsec_not*base64!".to_string()),
        ..get("dlv-secret", sink.url("/hooks"))
    });
    assert_eq!(h.report().await.outcome, failed("invalid_secret"));
    h.stop().await;
    assert!(sink.drain().is_empty());
}

#[tokio::test]
async fn the_ssrf_guard_refuses_private_targets_without_retries() {
    let mut sink = Sink::start(vec![], Answer::Status(200)).await;
    let port = sink.addr.port();
    let mut h = start(false, 5_000, options(&[1, 1]));
    let urls = [
        format!("http://127.0.0.1:{port}/pb"),
        format!("http://localhost:{port}/pb"),
        format!("http://LOCALHOST:{port}/pb"),
        format!("http://[::1]:{port}/pb"),
        format!("http://[::ffff:127.0.0.1]:{port}/pb"),
        format!("http://0.0.0.0:{port}/pb"),
        "http://10.0.0.1/pb".to_string(),
        "https://169.254.169.254/latest/meta-data".to_string(),
        "ftp://example.com/pb".to_string(),
        "file:///etc/passwd".to_string(),
    ];
    for (i, url) in urls.iter().enumerate() {
        h.dispatcher.submit(get(&format!("dlv-{i}"), url.clone()));
        let report = h.report().await;
        assert_eq!(report.delivery_id, format!("dlv-{i}"));
        assert_eq!(report.attempt, 1, "{url}");
        assert_eq!(report.outcome, failed("blocked_target"), "{url}");
    }
    assert!(h.stop().await.is_empty(), "no retries of a refused target");
    assert!(sink.drain().is_empty(), "nothing reached the sink");
    assert_eq!(
        sink.connections.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn malformed_urls_fail_at_once() {
    let mut h = start(true, 5_000, options(&[1]));
    for url in [
        "",
        "not a url",
        "http://",
        "http://host:99999/",
        "http://u@127.0.0.1/",
    ] {
        h.dispatcher.submit(get("dlv-bad", url.to_string()));
        assert_eq!(h.report().await.outcome, failed("invalid_url"), "{url:?}");
    }
    h.stop().await;
}

#[test]
fn the_address_classifier_knows_every_forbidden_range() {
    // (address, forbidden)
    let cases: &[(&str, bool)] = &[
        ("0.0.0.0", true),
        ("0.1.2.3", true),
        ("127.0.0.1", true),
        ("127.255.255.254", true),
        ("10.0.0.1", true),
        ("172.16.0.1", true),
        ("172.31.255.255", true),
        ("172.15.255.255", false),
        ("172.32.0.1", false),
        ("192.168.1.1", true),
        ("169.254.169.254", true),
        ("100.64.0.1", true),
        ("100.127.255.255", true),
        ("100.63.255.255", false),
        ("100.128.0.1", false),
        ("224.0.0.1", true),
        ("239.255.255.250", true),
        ("255.255.255.255", true),
        ("240.0.0.1", true),
        ("192.0.2.10", true),
        ("198.51.100.7", true),
        ("203.0.113.99", true),
        ("192.0.0.8", true),
        ("198.18.0.1", true),
        ("8.8.8.8", false),
        ("93.184.216.34", false),
        ("192.0.3.1", false),
        ("::", true),
        ("::1", true),
        ("fc00::1", true),
        ("fd12:3456::1", true),
        ("fe80::1", true),
        ("febf::1", true),
        ("fec0::1", true),
        ("ff02::1", true),
        ("2001:db8::1", true),
        ("2001:db8:ffff::1", true),
        ("2001::1", true),
        ("2606:4700:4700::1111", false),
        ("2a00:1450:4001::200e", false),
        // IPv4-mapped, IPv4-compatible, NAT64 and 6to4 forms judge the embedded address.
        ("::ffff:127.0.0.1", true),
        ("::ffff:10.1.2.3", true),
        ("::ffff:169.254.169.254", true),
        ("::ffff:8.8.8.8", false),
        ("::127.0.0.1", true),
        ("::8.8.8.8", false),
        ("64:ff9b::10.0.0.1", true),
        ("64:ff9b::8.8.8.8", false),
        ("2002:7f00:1::", true),
        ("2002:0808:0808::", false),
    ];
    for (address, want) in cases {
        let ip: IpAddr = address.parse().expect(address);
        assert_eq!(is_forbidden_target(ip), *want, "{address}");
    }
}

#[tokio::test]
async fn a_hanging_host_does_not_delay_a_healthy_one() {
    let hanging = Sink::start(vec![], Answer::Hang).await;
    let mut healthy = Sink::start(vec![], Answer::Status(200)).await;
    let mut o = options(&[1]);
    o.max_in_flight = 4;
    o.max_in_flight_per_host = 2;
    // Long enough that no hanging attempt ends during the test.
    let mut h = start(true, 60_000, o);
    for i in 0..20 {
        h.dispatcher
            .submit(get(&format!("hang-{i}"), hanging.url("/")));
    }
    for i in 0..5 {
        h.dispatcher
            .submit(get(&format!("ok-{i}"), healthy.url("/")));
    }
    for i in 0..5 {
        let report = h.report().await;
        assert!(report.delivery_id.starts_with("ok-"), "{report:?}");
        assert_eq!(report.outcome, AttemptOutcome::Delivered { status: 200 });
        assert!(
            healthy
                .next()
                .await
                .header("idempotency-key")
                .starts_with("ok-"),
            "{i}"
        );
    }
    let opened = hanging
        .connections
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        opened <= 2,
        "{opened} connections to one host, the bound is 2"
    );
    assert_eq!(
        h.dispatcher.held_jobs(),
        20,
        "the hanging host's jobs are still held"
    );
    // Shutdown is bounded: the hanging attempts are abandoned, not awaited for 60 s.
    assert!(h.stop().await.is_empty());
}

#[tokio::test]
async fn the_queue_bound_hands_jobs_back_and_shutdown_refuses_new_work() {
    let mut o = options(&[1]);
    o.max_queued_jobs = 2;
    let h = start(true, 5_000, o);
    let mut future_job = get("later", "http://127.0.0.1:9/".to_string());
    future_job.not_before_ms = NOW_MS + 3_600_000;
    assert!(h.dispatcher.try_submit(future_job.clone()).is_ok());
    assert!(h.dispatcher.try_submit(future_job.clone()).is_ok());
    assert_eq!(
        h.dispatcher.try_submit(future_job.clone()),
        Err(future_job.clone())
    );
    assert_eq!(h.dispatcher.held_jobs(), 2);
    h.dispatcher.shutdown().await;
    assert_eq!(
        h.dispatcher.held_jobs(),
        0,
        "scheduled jobs are dropped at shutdown"
    );
    assert_eq!(h.dispatcher.try_submit(future_job.clone()), Err(future_job));
}

#[tokio::test]
async fn scheduled_jobs_wait_for_their_time_and_due_ones_go_first() {
    let mut sink = Sink::start(vec![], Answer::Status(200)).await;
    let mut h = start(true, 5_000, options(&[1]));
    let mut later = get("later", sink.url("/later"));
    later.not_before_ms = NOW_MS + 3_600_000;
    let mut soon = get("soon", sink.url("/soon"));
    soon.not_before_ms = NOW_MS + 5;
    h.dispatcher.submit(later);
    h.dispatcher.submit(soon);
    let report = h.report().await;
    assert_eq!(report.delivery_id, "soon");
    assert_eq!(sink.next().await.path_and_query, "/soon");
    assert_eq!(
        h.dispatcher.held_jobs(),
        1,
        "the later job is still scheduled"
    );
    assert!(h.stop().await.is_empty());
    assert!(sink.drain().is_empty());
}

#[tokio::test]
async fn thousands_of_jobs_are_each_delivered_exactly_once() {
    const JOBS: usize = 2_000;
    let mut sink = Sink::start(vec![], Answer::Status(200)).await;
    let mut h = start(true, 5_000, options(&[1]));
    for i in 0..JOBS {
        let mut job = get(&format!("dlv-{i}"), sink.url(&format!("/pb?i={i}")));
        // Spread over a few milliseconds so the heap, not just the lanes, orders them.
        job.not_before_ms = NOW_MS + (i % 7) as u64;
        h.dispatcher.submit(job);
    }
    let mut delivered = std::collections::HashSet::new();
    for _ in 0..JOBS {
        let report = h.report().await;
        assert_eq!(report.outcome, AttemptOutcome::Delivered { status: 200 });
        assert!(delivered.insert(report.delivery_id), "reported twice");
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..JOBS {
        assert!(seen.insert(sink.next().await.header("idempotency-key").to_string()));
    }
    assert!(h.stop().await.is_empty());
    assert!(sink.drain().is_empty(), "no request beyond one per job");
    let opened = sink.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(opened <= 8, "{opened} connections; per-host bound is 8");
}

#[tokio::test]
async fn tens_of_thousands_of_pending_retries_are_held_cheaply_and_dropped_at_shutdown() {
    let h = start(true, 5_000, options(&[1]));
    for i in 0..50_000u64 {
        let mut job = get(
            &format!("dlv-{i}"),
            format!("http://h{}.example/pb", i % 100),
        );
        job.attempts_made = 3;
        job.not_before_ms = NOW_MS + 3_600_000 + i;
        h.dispatcher.submit(job);
    }
    assert_eq!(h.dispatcher.held_jobs(), 50_000);
    let dispatcher = h.dispatcher.clone();
    assert!(h.stop().await.is_empty(), "none was due");
    assert_eq!(dispatcher.held_jobs(), 0);
}
