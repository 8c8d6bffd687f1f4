//! Issue 5's crash promise, against the real binary: the affiliate's sink is down, a
//! conversion is acknowledged, the server is SIGKILLed, the sink comes up, the server is
//! restarted on the same data directory, and the delivery arrives (durable outbox,
//! at-least-once).

#[path = "support/sink.rs"]
mod sink;
mod support;

use sink::{free_port, Sink};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use support::{request, Process};

/// Bound on waiting for the resumed delivery; the retry schedule is one second per step.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(60);
const TOKEN: &str = "delivery-token";

fn config_text(data: &Path, sink: SocketAddr) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[storage]
data_dir = "{data}"
shards = 2
sync = "always"
segment_size_bytes = 2097152

[admin]
token = "{TOKEN}"

[dispatch]
allow_private_targets = true
# Long enough that the delivery is still pending when the server is killed.
retry_schedule_secs = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
timeout_ms = 2000

[[campaigns]]
id = 1
name = "c"
landing_url = "https://shop.example/?ref={{click_id}}"
revenue = 10.0
payout = 4.0

[[affiliates]]
id = 7
name = "aff"

[[affiliates.pixels]]
kind = "server"
url = "http://{sink}/pb?conv={{conversion_id}}&click={{click_id}}"
fire_on = ["approved"]
"#,
        data = data.display()
    )
}

fn spawn(config: &Path) -> Process {
    let path = config.to_str().expect("utf-8 path");
    tokio::task::block_in_place(|| Process::spawn(&["--config", path], &[]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_owed_before_a_kill_arrives_after_the_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("clicktrail.toml");
    let sink_addr = free_port();
    std::fs::write(&config, config_text(&dir.path().join("data"), sink_addr)).expect("config");

    // Sink down: nothing listens on its port.
    let process = spawn(&config);
    let click = request(
        process.addr,
        "GET",
        "/click.track?CID=1&AFID=7&R=0",
        &[],
        b"",
    )
    .await;
    assert_eq!(click.status, 200, "{}", click.text());
    let click_id = click.text();
    let post = request(
        process.addr,
        "GET",
        &format!("/pixel.track?type=s2s&ClickID={click_id}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(post.status, 200, "{}", post.text());
    let conversion_id = post.json()["conversion_id"]
        .as_str()
        .expect("conversion_id")
        .to_string();
    let auth = format!("Bearer {TOKEN}");
    let pending = request(
        process.addr,
        "GET",
        "/api/v1/deliveries?state=pending",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(pending.status, 200, "{}", pending.text());
    assert!(
        pending.text().contains(&conversion_id),
        "the delivery is pending before the kill: {}",
        pending.text()
    );
    tokio::task::block_in_place(|| process.kill());

    // Sink up on the same port, server restarted: the delivery arrives.
    let sink = Sink::start_on(sink_addr).await;
    let process = spawn(&config);
    let missing = sink
        .await_all(&BTreeSet::from([conversion_id.clone()]), DELIVERY_DEADLINE)
        .await;
    assert!(missing.is_empty(), "the delivery never arrived");
    // Nothing else was owed: the sink heard of this conversion only.
    let received = sink.received();
    assert_eq!(received.keys().collect::<Vec<_>>(), vec![&conversion_id]);
    let status = process.terminate();
    assert!(status.success(), "graceful exit: {status:?}");
    sink.stop().await;
}
