//! Hostile and oversized input against every endpoint (SPEC 7): each gets its documented
//! status, the server stays up, and a valid click still works afterwards.

mod support;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a hostile request must get back.
#[derive(Debug, Clone, Copy)]
enum Want {
    Status(u16),
    Gif,
}

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").into_bytes()
}

fn post(target: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "POST {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn with_header(target: &str, name: &str, value: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{name}: {value}\r\n\r\n")
        .into_bytes()
}

fn chunked(target: &str, total_bytes: usize) -> Vec<u8> {
    let mut raw = format!(
        "POST {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    let chunk = vec![b'a'; 8192];
    let mut sent = 0;
    while sent < total_bytes {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(&chunk);
        raw.extend_from_slice(b"\r\n");
        sent += chunk.len();
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    raw
}

#[tokio::test]
async fn hostile_requests_get_their_documented_answer() {
    let server = TestServer::start().await;
    let click = format!("/click.track?CID={C_PLAIN}&AFID={AFF}");
    let long_value = "v".repeat(257);
    let eleven_extras: String = (0..11).map(|i| format!("&e{i}=1")).collect();
    let big_body = vec![b'a'; 64 * 1024 + 1];
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        (
            "url over 8 KiB",
            get(&format!("{click}&x={}", "a".repeat(9 * 1024))),
            Want::Status(414),
        ),
        (
            "url over 8 KiB on the pixel",
            get(&format!("/pixel.track?x={}", "a".repeat(9 * 1024))),
            Want::Status(414),
        ),
        (
            "url far over the head buffer",
            get(&format!("{click}&x={}", "a".repeat(40 * 1024))),
            Want::Status(431),
        ),
        (
            "headers over 16 KiB",
            with_header(&click, "X-Pad", &"a".repeat(17 * 1024)),
            Want::Status(431),
        ),
        (
            "header far over the head buffer",
            with_header(&click, "X-Pad", &"a".repeat(40 * 1024)),
            Want::Status(431),
        ),
        (
            "too many headers",
            {
                let mut raw = b"GET /healthz HTTP/1.1\r\nHost: t\r\n".to_vec();
                for i in 0..200 {
                    raw.extend_from_slice(format!("X-H{i}: 1\r\n").as_bytes());
                }
                raw.extend_from_slice(b"\r\n");
                raw
            },
            Want::Status(431),
        ),
        (
            "body over 64 KiB",
            post(
                "/pixel.track",
                "application/x-www-form-urlencoded",
                &big_body,
            ),
            Want::Status(413),
        ),
        (
            "chunked body over 64 KiB",
            chunked("/pixel.track", 80 * 1024),
            Want::Status(413),
        ),
        (
            "admin body over 64 KiB",
            {
                let mut raw = post("/api/v1/campaigns", "application/json", &big_body);
                let auth = b"Authorization: Bearer test-admin-token\r\n";
                let at = raw.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
                raw.splice(at..at, auth.iter().copied());
                raw
            },
            Want::Status(413),
        ),
        (
            "garbage request line",
            b"GARBAGE\r\n\r\n".to_vec(),
            Want::Status(400),
        ),
        (
            "NUL in a header",
            b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n".to_vec(),
            Want::Status(400),
        ),
        (
            "bad percent-encoding on a click",
            get(&format!("{click}&SID=%zz")),
            Want::Status(400),
        ),
        (
            "NUL byte on a click",
            get(&format!("{click}&SID=%00")),
            Want::Status(400),
        ),
        (
            "non-UTF-8 on a click",
            get(&format!("{click}&SID=%ff")),
            Want::Status(400),
        ),
        (
            "value over 256 bytes on a click",
            get(&format!("{click}&SID1={long_value}")),
            Want::Status(400),
        ),
        (
            "eleven extras on a click",
            get(&format!("{click}{eleven_extras}")),
            Want::Status(400),
        ),
        (
            "eleven sub IDs on a click",
            get(&format!("{click}&SID=1,2,3,4,5,6,7,8,9,10,11")),
            Want::Status(400),
        ),
        (
            "bad ADID on a click",
            get(&format!("{click}&ADID=x")),
            Want::Status(400),
        ),
        (
            "POST to a click",
            post(&click, "text/plain", b"x"),
            Want::Status(405),
        ),
        (
            "bad encoding on an impression",
            get("/impression.track?CID=%zz"),
            Want::Gif,
        ),
        (
            "long value on an impression",
            get(&format!("/impression.track?CID=1&AFID=7&SID={long_value}")),
            Want::Gif,
        ),
        (
            "extras on an impression",
            get(&format!("/impression.track?CID=1&AFID=7{eleven_extras}")),
            Want::Gif,
        ),
        (
            "bad encoding on an img pixel",
            get("/pixel.track?CID=%zz"),
            Want::Gif,
        ),
        (
            "NUL on an img pixel",
            get("/pixel.track?CID=1&x=%00"),
            Want::Gif,
        ),
        (
            "long value on an img pixel",
            get(&format!("/pixel.track?MerchantReferenceID={long_value}")),
            Want::Gif,
        ),
        (
            "bad amount on an img pixel",
            get("/pixel.track?CID=1&AP=abc"),
            Want::Gif,
        ),
        (
            "bad encoding on a server post",
            get("/pixel.track?type=s2s&ClickID=%zz"),
            Want::Status(400),
        ),
        (
            "non-UTF-8 on a server post",
            get("/pixel.track?type=s2s&ClickID=%c3%28"),
            Want::Status(400),
        ),
        (
            "extras on a server post",
            get(&format!("/pixel.track?type=s2s{eleven_extras}")),
            Want::Status(400),
        ),
        (
            "unknown pixel type",
            get("/pixel.track?type=flash"),
            Want::Status(400),
        ),
        (
            "xml body on a server post",
            post("/pixel.track?type=s2s", "text/xml", b"<x/>"),
            Want::Status(400),
        ),
        (
            "nested JSON on a server post",
            post(
                "/pixel.track",
                "application/json",
                br#"{"type":"s2s","CID":{"a":1}}"#,
            ),
            Want::Status(400),
        ),
        (
            "broken JSON on a server post",
            post("/pixel.track?type=s2s", "application/json", b"{\"CID\":"),
            Want::Status(400),
        ),
        (
            "JSON array body",
            post("/pixel.track?type=s2s", "application/json", b"[1,2]"),
            Want::Status(400),
        ),
        (
            "bad encoding on admin",
            with_header(
                "/api/v1/conversions?from=%zz",
                "Authorization",
                "Bearer test-admin-token",
            ),
            Want::Status(400),
        ),
        ("unknown path", get("/../../etc/passwd"), Want::Status(404)),
        (
            "DELETE on the pixel",
            b"DELETE /pixel.track HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
            Want::Status(405),
        ),
    ];
    for (name, raw, want) in &cases {
        let reply = send_raw(server.addr, raw)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        match want {
            Want::Status(status) => assert_eq!(reply.status, *status, "{name}: {}", reply.text()),
            Want::Gif => assert!(reply.is_gif(), "{name}: {reply:?}"),
        }
        if reply.status == 400 && reply.header("content-type") == Some("application/json") {
            assert!(
                reply.json()["status"] == "invalid" || reply.json()["error"].is_string(),
                "{name}"
            );
        }
        let health = server.get("/healthz").await;
        assert_eq!(health.status, 200, "server down after {name}");
    }
    let reply = server.get(&click).await;
    assert_eq!(reply.status, 302, "a valid click still works");
    assert_eq!(reply.headers_named("set-cookie").len(), 1);
    let metrics = server.get("/metrics").await.text();
    assert!(metrics.contains("outcome=\"414\""), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn limits_are_inclusive() {
    let server = TestServer::start().await;
    let click = format!("/click.track?CID={C_PLAIN}&AFID={AFF}");
    let exactly = format!("{click}&SID1={}", "v".repeat(256));
    assert_eq!(server.get(&exactly).await.status, 302);
    let ten: String = (0..10).map(|i| format!("&e{i}=1")).collect();
    assert_eq!(server.get(&format!("{click}{ten}")).await.status, 302);
    let body = format!("type=s2s&CID={C_PLAIN}&AFID={AFF}&pad=");
    let mut body = body.into_bytes();
    let pad = 64 * 1024 - body.len();
    body.extend(std::iter::repeat_n(b'a', pad));
    // A 64 KiB body is read; its 256-byte value bound is what refuses it.
    let reply = server
        .request(
            "POST",
            "/pixel.track",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            &body,
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    server.stop().await;
}

/// Slowloris: a client that never finishes its request head is cut off by the header read
/// timeout. Time is paused, so the 10 s pass at once and the check is on virtual time.
#[tokio::test(start_paused = true)]
async fn slow_headers_are_closed_by_the_timeout() {
    let server = TestServer::start().await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let started = tokio::time::Instant::now();
    stream
        .write_all(b"GET /click.track?CID=1&AFID=7 HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(std::time::Duration::from_secs(60), stream.read(&mut buf))
        .await
        .expect("the server must close the connection");
    let elapsed = started.elapsed();
    match read {
        Ok(0) | Err(_) => {}
        Ok(n) => {
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(
                !text.starts_with("HTTP/1.1 2") && !text.starts_with("HTTP/1.1 3"),
                "{text}"
            );
        }
    }
    assert!(
        elapsed >= std::time::Duration::from_secs(10),
        "closed after {elapsed:?}"
    );
    assert!(
        elapsed < std::time::Duration::from_secs(30),
        "closed after {elapsed:?}"
    );
    // Everyone else is still served.
    assert_eq!(server.get("/healthz").await.status, 200);
}
