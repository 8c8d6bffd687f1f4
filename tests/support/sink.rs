//! A local postback sink for the crash and delivery tests: a hyper server on 127.0.0.1
//! that answers 200 and remembers every request's `conv` query value, so a test can await
//! (with a bounded deadline) the moment every expected delivery has arrived.
//!
//! Included with `#[path = "support/sink.rs"] mod sink;` next to `mod support;`, so the
//! server helper's `support/mod.rs` stays theirs.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;

/// What the sink has heard: `conv` value → number of requests carrying it (at-least-once
/// delivery may send one more than once). A flaky sink also keeps `refused:<conv>` for
/// each conversion whose first request it refused.
pub type Received = BTreeMap<String, u32>;

pub struct Sink {
    pub addr: SocketAddr,
    received: watch::Receiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    /// A sink on a fresh loopback port.
    pub async fn start() -> Sink {
        Self::start_on("127.0.0.1:0".parse().expect("addr")).await
    }

    /// A sink on `addr` (a port chosen earlier, for "sink down, then up" tests).
    pub async fn start_on(addr: SocketAddr) -> Sink {
        Self::start_with(addr, false).await
    }

    /// A sink that answers `503` to the first request for about half the conversions
    /// (those whose ID's bytes add up to an even number), so their deliveries need a retry.
    pub async fn start_flaky() -> Sink {
        Self::start_with("127.0.0.1:0".parse().expect("addr"), true).await
    }

    async fn start_with(addr: SocketAddr, flaky: bool) -> Sink {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind the sink on {addr}: {e}"));
        let addr = listener.local_addr().expect("sink addr");
        let (tx, rx) = watch::channel(Received::new());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: hyper::Request<_>| {
                        let tx = tx.clone();
                        async move {
                            let query = request.uri().query().unwrap_or("").to_string();
                            let conv = form_urlencoded_value(&query, "conv");
                            let mut status = hyper::StatusCode::OK;
                            if let Some(conv) = conv {
                                let refused = format!("refused:{conv}");
                                let refuse = flaky
                                    && conv.bytes().map(u32::from).sum::<u32>() % 2 == 0
                                    && !tx.borrow().contains_key(&refused);
                                if refuse {
                                    // Remembered under a separate key: not a delivery.
                                    status = hyper::StatusCode::SERVICE_UNAVAILABLE;
                                    tx.send_modify(|seen| {
                                        seen.insert(refused, 1);
                                    });
                                } else {
                                    tx.send_modify(|seen| *seen.entry(conv).or_insert(0) += 1);
                                }
                            }
                            let mut response =
                                hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
                            *response.status_mut() = status;
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Sink {
            addr,
            received: rx,
            task,
        }
    }

    pub fn received(&self) -> Received {
        self.received.borrow().clone()
    }

    /// Waits until every id in `expected` has reached the sink, at most `deadline`; returns
    /// the ids still missing (empty on success).
    pub async fn await_all(&self, expected: &BTreeSet<String>, deadline: Duration) -> Vec<String> {
        let mut rx = self.received.clone();
        let done = tokio::time::timeout(
            deadline,
            rx.wait_for(|seen| expected.iter().all(|id| seen.contains_key(id))),
        )
        .await;
        if matches!(done, Ok(Ok(_))) {
            return Vec::new();
        }
        let seen = self.received();
        expected
            .iter()
            .filter(|id| !seen.contains_key(*id))
            .cloned()
            .collect()
    }

    /// Stops accepting; the port is free again once this returns.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn form_urlencoded_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=')?;
        (n == name).then(|| v.to_string())
    })
}

/// A port that was free a moment ago: bound, then released. For a sink that must be down
/// when the server first tries it and up, on the same port, later.
pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}
