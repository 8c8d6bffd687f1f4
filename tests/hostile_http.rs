//! Malformed requests against every endpoint (issue 7). `http_limits.rs` pins the exact
//! status of each limit on the tracking endpoints; this table crosses every kind of
//! malformation with every route (tracking, every pixel type, the admin API, health,
//! metrics, unknown paths) and asserts the outcome class: never a 5xx, never a panic
//! (a panic hook counts them, since the server runs in this process), browser pixels and
//! impressions still answer the harmless gif unless the transport refused the request, the
//! server stays up after each, and a valid click works at the end.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::*;

/// Routes with what they must answer to bad input that got past the transport limits.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Impressions and `img` pixels: always the 1×1 gif.
    Gif,
    /// Anything else: a 2xx/3xx/4xx answer, never a 5xx.
    Answer,
}

fn routes() -> Vec<(&'static str, &'static str, Kind)> {
    vec![
        ("GET", "/click.track?CID=1&AFID=7", Kind::Answer),
        ("GET", "/impression.track?CID=1&AFID=7", Kind::Gif),
        ("GET", "/pixel.track?CID=1&AFID=7", Kind::Gif),
        ("GET", "/pixel.track?type=img&CID=1", Kind::Gif),
        ("GET", "/pixel.track?type=iframe&CID=1", Kind::Answer),
        ("GET", "/pixel.track?type=js&CID=1", Kind::Answer),
        ("GET", "/pixel.track?type=s2s&CID=1&AFID=7", Kind::Answer),
        ("POST", "/pixel.track?type=s2s", Kind::Answer),
        ("GET", "/api/v1/campaigns?x=1", Kind::Answer),
        ("POST", "/api/v1/campaigns?x=1", Kind::Answer),
        ("PUT", "/api/v1/campaigns/1?x=1", Kind::Answer),
        ("GET", "/api/v1/affiliates?x=1", Kind::Answer),
        ("GET", "/api/v1/webhooks?x=1", Kind::Answer),
        ("GET", "/api/v1/clicks/abc?x=1", Kind::Answer),
        ("GET", "/api/v1/conversions?limit=5", Kind::Answer),
        ("POST", "/api/v1/conversions/abc/status?x=1", Kind::Answer),
        ("GET", "/api/v1/deliveries?state=pending", Kind::Answer),
        ("POST", "/api/v1/deliveries/abc/replay?x=1", Kind::Answer),
        ("GET", "/api/v1/report?group_by=day", Kind::Answer),
        ("GET", "/healthz?x=1", Kind::Answer),
        ("GET", "/readyz?x=1", Kind::Answer),
        ("GET", "/metrics?x=1", Kind::Answer),
        ("GET", "/nowhere?x=1", Kind::Answer),
    ]
}

/// One malformation applied to a route: the raw request bytes.
fn malformed(method: &str, target: &str, what: &str) -> Vec<u8> {
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}\r\n");
    let head = |target: &str, extra: &str, body: &[u8]| -> Vec<u8> {
        let mut raw = format!(
            "{method} {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{auth}{extra}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(body);
        raw
    };
    let sep = if target.contains('?') { '&' } else { '?' };
    let many: String = (0..200).map(|i| format!("&p{i}=v")).collect();
    let repeated: String = (0..30)
        .map(|i| format!("&CID={i}&AFID=7&SID=s{i}"))
        .collect();
    match what {
        "bad percent-encoding" => head(&format!("{target}{sep}a=%zz&b=%4&c=%"), "", b""),
        "encoded NUL" => head(&format!("{target}{sep}SID=a%00b&x%00=1"), "", b""),
        "raw NUL in the target" => {
            let mut raw = format!("{method} {target}{sep}a=").into_bytes();
            raw.extend_from_slice(b"x\0y HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
            raw
        }
        "encoded non-UTF-8" => head(&format!("{target}{sep}SID=%ff%fe&n%c3%28=1"), "", b""),
        "raw non-UTF-8 in the target" => {
            let mut raw = format!("{method} {target}{sep}a=").into_bytes();
            raw.extend_from_slice(b"\xff\xfe HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
            raw
        }
        "non-UTF-8 header" => {
            let mut raw = head(target, "", b"");
            let at = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end") + 2;
            raw.splice(
                at..at,
                b"Cookie: ct_1=\xff\xfe\r\nUser-Agent: \xc3\x28\r\n"
                    .iter()
                    .copied(),
            );
            raw
        }
        "10 KB value" => head(
            &format!("{target}{sep}SID={}", "v".repeat(10 * 1024)),
            "",
            b"",
        ),
        "300-byte value" => head(&format!("{target}{sep}SID1={}", "v".repeat(300)), "", b""),
        "200 parameters" => head(&format!("{target}{many}"), "", b""),
        "repeated parameters" => head(&format!("{target}{repeated}"), "", b""),
        "huge header" => head(
            target,
            &format!("X-Pad: {}\r\n", "h".repeat(20 * 1024)),
            b"",
        ),
        "huge cookie" => head(
            target,
            &format!(
                "Cookie: {}\r\n",
                (0..800)
                    .map(|i| format!("ct_{i}=abc; "))
                    .collect::<String>()
            ),
            b"",
        ),
        "many X-Forwarded-For hops" => head(
            target,
            &format!("X-Forwarded-For: {}\r\n", vec!["10.0.0.1"; 500].join(", ")),
            b"",
        ),
        "oversized body" => head(
            target,
            "Content-Type: application/json\r\n",
            &vec![b'{'; 70 * 1024],
        ),
        "binary body" => head(
            target,
            "Content-Type: application/x-www-form-urlencoded\r\n",
            &(0..=255u8).cycle().take(4096).collect::<Vec<u8>>(),
        ),
        "JSON bomb" => head(
            target,
            "Content-Type: application/json\r\n",
            format!("{}{}", "[".repeat(5000), "]".repeat(5000)).as_bytes(),
        ),
        "bad Content-Length" => head(target, "Content-Length: -1\r\n", b""),
        other => panic!("unknown malformation {other}"),
    }
}

const MALFORMATIONS: &[&str] = &[
    "bad percent-encoding",
    "encoded NUL",
    "raw NUL in the target",
    "encoded non-UTF-8",
    "raw non-UTF-8 in the target",
    "non-UTF-8 header",
    "10 KB value",
    "300-byte value",
    "200 parameters",
    "repeated parameters",
    "huge header",
    "huge cookie",
    "many X-Forwarded-For hops",
    "oversized body",
    "binary body",
    "JSON bomb",
    "bad Content-Length",
];

/// Statuses the transport answers before a route sees the request.
const TRANSPORT_REFUSALS: &[u16] = &[400, 408, 413, 414, 431];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_malformed_request_gets_a_5xx_or_a_panic_on_any_endpoint() {
    let panics = Arc::new(AtomicUsize::new(0));
    let seen = panics.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // The server's threads: this test's runtime workers and the engine's shard actors
        // (other tests in this binary run on their own test threads).
        let name = std::thread::current().name().unwrap_or("").to_string();
        if name == "tokio-runtime-worker" || name.starts_with("shard-") {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));
    let server = TestServer::start().await;
    let mut outcomes = std::collections::BTreeMap::<u16, usize>::new();
    for (method, target, kind) in routes() {
        for what in MALFORMATIONS {
            let raw = malformed(method, target, what);
            let label = format!("{what} on {method} {target}");
            // "No answer" is acceptable only as the transport dropping a broken request;
            // the health check below proves the server is still there.
            if let Ok(reply) = send_raw(server.addr, &raw).await {
                *outcomes.entry(reply.status).or_default() += 1;
                assert!(
                    reply.status < 500,
                    "{label}: {} {}",
                    reply.status,
                    reply.text()
                );
                if kind == Kind::Gif && !TRANSPORT_REFUSALS.contains(&reply.status) {
                    assert!(reply.is_gif(), "{label}: the harmless gif: {reply:?}");
                }
            }
            let health = server.get("/healthz").await;
            assert_eq!(health.status, 200, "server down after {label}");
        }
    }
    eprintln!("statuses seen: {outcomes:?}");
    assert_eq!(
        panics.load(Ordering::SeqCst),
        0,
        "a request panicked the server"
    );
    let click = server
        .get(&format!("/click.track?CID={C_PLAIN}&AFID={AFF}"))
        .await;
    assert_eq!(click.status, 302, "a valid click works afterwards");
    assert_eq!(click.headers_named("set-cookie").len(), 1);
    server.stop().await;
}

/// Slow bodies on every route that reads one: a client that sends its head and part of
/// its body, then stalls, gets `408` when the body read times out (10 s), and nobody else
/// is held up. Time is paused, so the 10 s pass at once and the check is on virtual time.
#[tokio::test(start_paused = true)]
async fn slow_bodies_time_out_on_every_route_that_reads_one() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start().await;
    let routes = [
        ("POST", "/pixel.track", "application/x-www-form-urlencoded"),
        ("POST", "/pixel.track?type=s2s", "application/json"),
        ("POST", "/api/v1/campaigns", "application/json"),
        ("PUT", "/api/v1/campaigns/1", "application/json"),
        ("POST", "/api/v1/affiliates", "application/json"),
        ("POST", "/api/v1/webhooks", "application/json"),
        ("POST", "/api/v1/conversions/abc/status", "application/json"),
    ];
    for (method, target, content_type) in routes {
        let mut stream = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: {content_type}\r\nContent-Length: 100\r\n\r\n{{\"type\":"
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        let started = tokio::time::Instant::now();
        let reply = read_reply(&mut stream).await;
        let waited = started.elapsed();
        match reply {
            Ok(reply) => assert_eq!(reply.status, 408, "{method} {target}: {}", reply.text()),
            Err(e) => panic!("{method} {target}: no answer to a stalled body: {e}"),
        }
        assert!(
            waited >= std::time::Duration::from_secs(10) && waited < IO_TIMEOUT,
            "{method} {target}: answered after {waited:?}"
        );
        assert_eq!(server.get("/healthz").await.status, 200);
    }
    // (No click here: with time paused, a wait on a shard thread would let the runtime
    // jump past the client's own timeout. The table test above ends with a click.)
}
