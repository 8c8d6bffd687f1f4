//! Deliveries per second through `engine::dispatcher` to a sink on 127.0.0.1 that answers
//! 200 at once (issue 5 target: at least 10 k/s), and the same while a second target hangs
//! on every request (target: the healthy rate drops by less than 10 %).
//!
//! Run: `cargo bench --bench dispatch_throughput`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine::dispatcher::{AttemptOutcome, DeliveryJob, DispatchOptions, Dispatcher};
use engine::{DispatchConfig, HttpMethod, SystemClock};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Deliveries per measured batch: large enough to reach steady state.
const BATCH: u64 = 2_000;

/// A sink that answers 200 at once, or never when `hang`.
async fn sink(hang: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_: Request<Incoming>| async move {
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn job(id: u64, addr: SocketAddr) -> DeliveryJob {
    DeliveryJob {
        id: format!("dlv-{id}"),
        url: format!("http://{addr}/pb?click=ck{id}&payout=4.50"),
        method: HttpMethod::Get,
        body: None,
        webhook_secret: None,
        attempts_made: 0,
        not_before_ms: 0,
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (healthy, hanging) = runtime.block_on(async { (sink(false).await, sink(true).await) });
    let mut group = c.benchmark_group("dispatch");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    for with_hanging in [false, true] {
        let name = if with_hanging {
            "deliveries_with_a_hanging_target"
        } else {
            "deliveries_to_one_healthy_target"
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let (tx, mut reports) = mpsc::unbounded_channel();
                    let config = DispatchConfig {
                        allow_private_targets: true,
                        timeout_ms: 60_000,
                        ..DispatchConfig::default()
                    };
                    let options = DispatchOptions {
                        shutdown_grace_ms: 0,
                        ..DispatchOptions::default()
                    };
                    let dispatcher =
                        Dispatcher::spawn_with(config, options, Arc::new(SystemClock), tx);
                    if with_hanging {
                        // More than the per-host bound, so the hanging host's lane stays full.
                        for id in 0..64 {
                            dispatcher.submit(job(1_000_000 + id, hanging));
                        }
                    }
                    let started = Instant::now();
                    let mut id = 0;
                    for _ in 0..iterations {
                        for _ in 0..BATCH {
                            dispatcher.submit(job(id, healthy));
                            id += 1;
                        }
                        let mut delivered = 0;
                        while delivered < BATCH {
                            let report = reports.recv().await.expect("report");
                            assert!(
                                matches!(report.outcome, AttemptOutcome::Delivered { .. }),
                                "{report:?}"
                            );
                            delivered += 1;
                        }
                    }
                    let elapsed: Duration = started.elapsed();
                    dispatcher.shutdown().await;
                    elapsed
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
