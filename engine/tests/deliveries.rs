//! The durable outbox wired through the engine (SPEC 5): which deliveries a conversion
//! gets, that they reach a real HTTP sink on loopback with a stable Idempotency-Key, that
//! attempts are persisted, retried, failed, replayed, and resumed after a crash; and the
//! browser pixels of iframe/js answers.

mod common;

use common::*;
use engine::dispatcher::DispatchOptions;
use engine::*;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// What the sink does with the next request.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    /// Keep the connection open and never answer.
    Hang,
}

#[derive(Debug)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A tiny HTTP/1.1 sink on 127.0.0.1: answers by script (200 once it is empty) and reports
/// every request it read on the returned channel.
async fn sink(script: Vec<Answer>) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let tx = tx.clone();
            let script = Arc::clone(&script);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let mut lines = head.split("\r\n");
                let mut first = lines.next().unwrap_or("").split(' ');
                let method = first.next().unwrap_or("").to_string();
                let target = first.next().unwrap_or("").to_string();
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = buf[head_end..].to_vec();
                let answer = script
                    .lock()
                    .expect("script")
                    .pop_front()
                    .unwrap_or(Answer::Status(200));
                let _ = tx.send(Seen {
                    method,
                    target,
                    headers,
                    body,
                });
                match answer {
                    Answer::Status(code) => {
                        let reply = format!(
                            "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        );
                        let _ = socket.write_all(reply.as_bytes()).await;
                    }
                    Answer::Hang => std::future::pending::<()>().await,
                }
            });
        }
    });
    (addr, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    rx.recv().await.expect("the sink saw a request")
}

fn short_retries(schedule_ms: Vec<u64>) -> DispatchOptions {
    DispatchOptions {
        retry_schedule_ms: Some(schedule_ms),
        jitter_seed: Some(1),
        ..DispatchOptions::default()
    }
}

fn pixels(addr: SocketAddr) -> Vec<Pixel> {
    vec![
        Pixel {
            campaign: Some(1),
            url: format!("http://{addr}/pb/{{click_id}}?p={{payout}}&s=[=Status=]"),
            ..Pixel::default()
        },
        Pixel {
            url: format!("http://{addr}/global?c={{click_id}}"),
            ..Pixel::default()
        },
        Pixel {
            kind: PixelKind::Image,
            url: "https://img.example/px?c={click_id}&sid={sid1}".into(),
            ..Pixel::default()
        },
        Pixel {
            kind: PixelKind::Js,
            html: "<script>var c='{click_id}';</script>".into(),
            fire_on: vec![ConversionStatus::Pending],
            ..Pixel::default()
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reaches_pixels_and_webhooks_and_is_persisted() {
    let (addr, mut seen) = sink(vec![]).await;
    let mut h = Harness::with_options(
        2,
        |c| {
            c.affiliates[0].pixels = pixels(addr);
            c.webhooks = vec![Webhook {
                id: 1,
                url: format!("http://{addr}/hook"),
                secret: "whsec_c2VjcmV0".into(),
                fire_on: vec![ConversionStatus::Approved, ConversionStatus::Rejected],
                ..Webhook::default()
            }];
        },
        short_retries(vec![0]),
    );
    let e = h.engine();
    let click = click_id(e, click_request(1, 7, 1)).await;
    let mut req = conversion(PixelType::S2s);
    req.click_id = Some(click.clone());
    let out = e.convert(req).await;
    assert_eq!(out.status, OutcomeStatus::Approved);
    assert!(
        out.browser_pixels.is_empty(),
        "s2s answers carry no browser pixels"
    );
    let conv = out.conversion_id.expect("id");
    // Two deliveries: the campaign-level pixel (not the global one) and the webhook.
    let mut got = [next(&mut seen).await, next(&mut seen).await];
    got.sort_by(|a, b| a.target.cmp(&b.target));
    let (hook, pixel) = (&got[0], &got[1]);
    assert_eq!(pixel.method, "GET");
    assert_eq!(pixel.target, format!("/pb/{click}?p=4.00&s=approved"));
    assert_eq!(
        pixel.header("idempotency-key"),
        Some(format!("{conv}.0").as_str())
    );
    assert_eq!(hook.method, "POST");
    assert_eq!(hook.target, "/hook");
    assert_eq!(
        hook.header("idempotency-key"),
        Some(format!("{conv}.1").as_str())
    );
    assert_eq!(hook.header("webhook-id"), hook.header("idempotency-key"));
    assert!(hook
        .header("webhook-signature")
        .is_some_and(|s| s.starts_with("v1,")));
    let body: serde_json::Value = serde_json::from_slice(&hook.body).expect("json body");
    assert_eq!(body["type"], "conversion.approved");
    assert_eq!(body["data"]["conversion_id"], conv.as_str());
    assert_eq!(body["data"]["payout"], 4.0);
    // An admin status change fires what is set to fire on the new status (the webhook).
    let view = e
        .set_conversion_status(&conv, ConversionStatus::Rejected)
        .await
        .expect("status change");
    assert_eq!(view.deliveries.len(), 3);
    let hook2 = next(&mut seen).await;
    assert_eq!(
        hook2.header("idempotency-key"),
        Some(format!("{conv}.2").as_str())
    );
    let body: serde_json::Value = serde_json::from_slice(&hook2.body).expect("json body");
    assert_eq!(body["type"], "conversion.rejected");
    // Browser pixels: only in iframe/js answers; campaign 2 has no campaign-level ones so
    // the affiliate's global ones apply, filtered by status.
    let click2 = click_id(e, click_request(2, 7, 2)).await;
    for (ty, status, want) in [
        (PixelType::Iframe, ConversionStatus::Approved, 1),
        (PixelType::Js, ConversionStatus::Pending, 1),
        (PixelType::Img, ConversionStatus::Approved, 0),
    ] {
        let mut req = conversion(ty);
        req.click_id = Some(click2.clone());
        req.status = status;
        req.event = format!("{ty:?}-{status:?}");
        let out = e.convert(req).await;
        assert_eq!(
            out.browser_pixels.len(),
            want,
            "{ty:?} {status:?}: {:?}",
            out.browser_pixels
        );
        if ty == PixelType::Iframe {
            assert_eq!(
                out.browser_pixels[0],
                BrowserPixel::Image {
                    url: format!("https://img.example/px?c={click2}&sid=s1")
                }
            );
        }
        if ty == PixelType::Js {
            assert_eq!(
                out.browser_pixels[0],
                BrowserPixel::Html {
                    html: format!("<script>var c='{click2}';</script>")
                }
            );
        }
    }
    // The approved iframe and img conversions on campaign 2 each fired the affiliate's
    // global server pixel and the webhook (server-side fan-out ignores the pixel type).
    let mut targets = Vec::new();
    for _ in 0..4 {
        targets.push(next(&mut seen).await.target);
    }
    targets.sort();
    let global = format!("/global?c={click2}");
    assert_eq!(
        targets,
        [global.as_str(), global.as_str(), "/hook", "/hook"]
    );
    // Every attempt is persisted: after a graceful restart all are delivered.
    h.restart().await;
    let delivered = h
        .engine()
        .deliveries(Some(DeliveryState::Delivered), 100)
        .await
        .expect("deliveries");
    assert_eq!(delivered.len(), 7, "{delivered:#?}");
    assert!(delivered
        .iter()
        .all(|d| d.attempts.len() == 1 && d.attempts[0].result == "200"));
    let view = h.engine().click_view(&click).await.expect("click");
    assert_eq!(view.conversions[0].deliveries.len(), 3);
    assert!(h
        .engine()
        .deliveries(Some(DeliveryState::Pending), 100)
        .await
        .expect("deliveries")
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_then_fails_then_replays() {
    let (addr, mut seen) = sink(vec![Answer::Status(500), Answer::Status(503)]).await;
    let mut h = Harness::with_options(
        1,
        |c| {
            c.affiliates[0].pixels = vec![Pixel {
                url: format!("http://{addr}/pb?c={{click_id}}"),
                ..Pixel::default()
            }]
        },
        short_retries(vec![0]),
    );
    let click = click_id(h.engine(), click_request(1, 7, 1)).await;
    let mut req = conversion(PixelType::S2s);
    req.click_id = Some(click);
    let conv = h.engine().convert(req).await.conversion_id.expect("id");
    let first = next(&mut seen).await;
    let second = next(&mut seen).await;
    assert_eq!(
        first.header("idempotency-key"),
        second.header("idempotency-key")
    );
    h.restart().await;
    let failed = h
        .engine()
        .deliveries(Some(DeliveryState::Failed), 10)
        .await
        .expect("deliveries");
    assert_eq!(failed.len(), 1, "{failed:#?}");
    let results: Vec<&str> = failed[0]
        .attempts
        .iter()
        .map(|a| a.result.as_str())
        .collect();
    assert_eq!(results, ["500", "503"]);
    let id = failed[0].id.clone();
    assert_eq!(id, format!("{conv}.0"));
    // Replay keeps the ID and goes again; the sink now answers 200.
    let replayed = h.engine().replay_delivery(&id).await.expect("replay");
    assert_eq!(replayed.state, DeliveryState::Pending);
    let third = next(&mut seen).await;
    assert_eq!(third.header("idempotency-key"), Some(id.as_str()));
    h.restart().await;
    let done = h
        .engine()
        .deliveries(Some(DeliveryState::Delivered), 10)
        .await
        .expect("deliveries");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].attempts.len(), 3);
    assert!(matches!(
        h.engine().replay_delivery("nope").await,
        Err(AdminError::NotFound)
    ));
    assert!(matches!(
        h.engine().replay_delivery(&format!("{conv}.9")).await,
        Err(AdminError::NotFound)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deliveries_resume_after_a_crash() {
    // The first attempt hangs; the engine "crashes" before any report.
    let (addr, mut seen) = sink(vec![Answer::Hang]).await;
    let mut h = Harness::with_options(
        2,
        |c| {
            c.affiliates[0].pixels = vec![Pixel {
                url: format!("http://{addr}/pb?c={{click_id}}"),
                ..Pixel::default()
            }]
        },
        short_retries(vec![0]),
    );
    let click = click_id(h.engine(), click_request(1, 7, 1)).await;
    let mut req = conversion(PixelType::S2s);
    req.click_id = Some(click);
    assert_eq!(
        h.engine().convert(req).await.status,
        OutcomeStatus::Approved
    );
    let first = next(&mut seen).await;
    h.crash_and_reopen(3);
    let resumed = next(&mut seen).await;
    assert_eq!(
        first.header("idempotency-key"),
        resumed.header("idempotency-key")
    );
    h.restart().await;
    let done = h
        .engine()
        .deliveries(Some(DeliveryState::Delivered), 10)
        .await
        .expect("deliveries");
    assert_eq!(done.len(), 1);
}
