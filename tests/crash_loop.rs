//! The kill -9 loop (issue 7, and issue 4's restart promise): the real `clicktrail` binary
//! under concurrent clicks, ClickID posts, AFID posts, status changes and config changes,
//! with a local postback sink; SIGKILL at a seeded random moment; restart on the same data
//! directory, some rounds with a different shard count (half of those first killed again
//! in the middle of the reshard at start-up). After every restart:
//!
//! - every click answered 302 (or 200 with `R=0`) is there with the same values;
//! - every conversion answered 200 is there with the same payout, revenue and click, in a
//!   status it was acknowledged in (or one an unanswered change asked for);
//! - every acknowledged config change is there;
//! - the report's counters equal the recorded conversions exactly, and its click count lies
//!   between the acknowledged clicks and those plus the clicks lost in flight at a kill;
//! - conversions nobody acknowledged are no more than the posts lost in flight.
//!
//! At the end every delivery owed for an acknowledged approved conversion reaches the sink
//! within a bounded deadline; the sink refuses the first attempt of about half of them, so
//! retries are pending across kills as well.
//!
//! `CRASH_ROUNDS=` runs more rounds (default 30); `SEED=` replays a run.

#[path = "support/ops.rs"]
mod ops;
#[path = "support/sink.rs"]
mod sink;
mod support;

use ops::{cookie_value, raw, send, Sent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sink::Sink;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::Process;

/// Rounds per CI run: the issue asks for at least 20; each takes about half a second here
/// (a second under load), so the test stays well inside its two-minute budget.
const DEFAULT_ROUNDS: usize = 30;
/// Concurrent clients: enough that a kill lands with several requests in flight.
const WORKERS: usize = 4;
/// Operations one worker starts per round at most, so a round is bounded even when the
/// kill target is never reached.
const MAX_OPS_PER_ROUND: usize = 60;
/// Older clicks re-read per worker per round, on top of every click of the last round.
const SAMPLE_OLDER_CLICKS: usize = 10;
/// Bound on a round's wait for its kill moment; healthy rounds take well under a second.
const ROUND_DEADLINE: Duration = Duration::from_secs(60);
/// Bound on waiting for every owed delivery after the last restart. The retry schedule is
/// one second per step, so this is many retries' worth.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(60);
const TOKEN: &str = "crash-token";
const CAMPAIGN: u32 = 1;
const AFFILIATE: u32 = 7;
const CREATIVE: u32 = 3;
/// Campaigns the config-change operation writes: one per worker, so each has one writer.
const CONFIG_CAMPAIGN_BASE: u32 = 100;

const STATUSES: [&str; 3] = ["approved", "pending", "rejected"];

fn config_text(data: &Path, shards: usize, sink: SocketAddr) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://localhost"

[storage]
data_dir = "{data}"
shards = {shards}
sync = "always"
# Small segments preallocate fast; frequent snapshots put snapshot + replay under test.
segment_size_bytes = 2097152
snapshot_every_records = 150

[admin]
token = "{TOKEN}"

[dispatch]
allow_private_targets = true
retry_schedule_secs = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
timeout_ms = 2000

[[campaigns]]
id = {CAMPAIGN}
name = "crash"
landing_url = "https://shop.example/?ref={{click_id}}&s={{sid1}}"
revenue = 10.0
payout = 4.0

[[affiliates]]
id = {AFFILIATE}
name = "aff"

[[affiliates.pixels]]
kind = "server"
url = "http://{sink}/pb?conv={{conversion_id}}&status={{status}}"
fire_on = ["approved"]
"#,
        data = data.display()
    )
}

/// What the test knows of a conversion.
#[derive(Clone, Debug)]
struct Conv {
    id: String,
    click_id: Option<String>,
    payout: f64,
    revenue: f64,
    /// Statuses it may be in: the acknowledged one, plus any an unanswered change asked for.
    allowed: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq)]
enum ConvAttempt {
    None,
    Acked(String),
    /// A ClickID post lost in flight: a conversion may or may not exist.
    Maybe,
}

#[derive(Clone, Debug)]
struct Click {
    id: String,
    sid: String,
    round: usize,
    conversion: ConvAttempt,
}

/// One worker's view of what it did, across rounds. Each worker writes only its own
/// clicks, conversions and config campaign, so the order of its acknowledgements is the
/// order of the changes.
#[derive(Debug)]
struct Worker {
    index: usize,
    rng: StdRng,
    ops: u64,
    clicks: Vec<Click>,
    conversions: Vec<Conv>,
    clicks_acked: u64,
    /// Clicks lost in flight: they may be recorded, and nothing can tell (their ID was
    /// never seen), so they widen the allowed click count forever.
    click_slack: u64,
    /// AFID posts lost in flight since the last check.
    afid_slack: u64,
    /// The acknowledged name of this worker's config campaign, and one an unanswered
    /// change may have written.
    campaign_name: Option<String>,
    campaign_maybe: Option<String>,
    /// Conversions that owe the sink a delivery: acknowledged while approved.
    owed: BTreeSet<String>,
}

impl Worker {
    fn new(index: usize, seed: u64) -> Worker {
        Worker {
            index,
            rng: StdRng::seed_from_u64(seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9)),
            ops: 0,
            clicks: Vec::new(),
            conversions: Vec::new(),
            clicks_acked: 0,
            click_slack: 0,
            afid_slack: 0,
            campaign_name: None,
            campaign_maybe: None,
            owed: BTreeSet::new(),
        }
    }

    /// One round of load until `stop` or `MAX_OPS_PER_ROUND`; every answered operation
    /// bumps `acked`.
    async fn run(
        mut self,
        addr: SocketAddr,
        round: usize,
        stop: Arc<AtomicBool>,
        acked: tokio::sync::watch::Sender<usize>,
    ) -> Worker {
        for _ in 0..MAX_OPS_PER_ROUND {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let answered = self.one_op(addr, round).await;
            if answered {
                acked.send_modify(|n| *n += 1);
            }
        }
        self
    }

    /// Returns whether the operation was answered.
    async fn one_op(&mut self, addr: SocketAddr, round: usize) -> bool {
        self.ops += 1;
        let pick = self.rng.random_range(0..100);
        let unconverted: Vec<usize> = (0..self.clicks.len())
            .filter(|&i| self.clicks[i].conversion == ConvAttempt::None)
            .collect();
        match pick {
            0..40 => self.click(addr, round).await,
            40..60 if !unconverted.is_empty() => {
                let i = unconverted[self.rng.random_range(0..unconverted.len())];
                self.click_id_post(addr, i).await
            }
            40..60 => self.click(addr, round).await,
            60..75 => self.afid_post(addr).await,
            75..90 if !self.conversions.is_empty() => {
                let i = self.rng.random_range(0..self.conversions.len());
                self.status_change(addr, i).await
            }
            75..90 => self.afid_post(addr).await,
            _ => self.config_change(addr, round).await,
        }
    }

    async fn click(&mut self, addr: SocketAddr, round: usize) -> bool {
        let sid = format!("w{}-{}", self.index, self.ops);
        let redirect = self.rng.random_bool(0.5);
        let target = format!(
            "/click.track?CID={CAMPAIGN}&AFID={AFFILIATE}&ADID={CREATIVE}&SID={sid}{}",
            if redirect { "" } else { "&R=0" }
        );
        match send(addr, &raw("GET", &target, &[], b"")).await {
            Sent::Answered(reply) => {
                let id = if redirect {
                    assert_eq!(reply.status, 302, "click: {}", reply.text());
                    let cookie = cookie_value(&reply, CAMPAIGN)
                        .unwrap_or_else(|| panic!("a tracked click sets its cookie: {reply:?}"));
                    let location = reply.header("location").expect("location");
                    assert!(
                        location.starts_with(&format!("https://shop.example/?ref={cookie}&s=")),
                        "{location}"
                    );
                    cookie
                } else {
                    assert_eq!(reply.status, 200, "click: {}", reply.text());
                    reply.text()
                };
                assert!(!id.is_empty());
                self.clicks_acked += 1;
                self.clicks.push(Click {
                    id,
                    sid,
                    round,
                    conversion: ConvAttempt::None,
                });
                true
            }
            Sent::Refused => false,
            Sent::Lost => {
                self.click_slack += 1;
                false
            }
        }
    }

    fn record_conversion(&mut self, reply: &support::Reply, click_id: Option<String>) -> String {
        assert_eq!(reply.status, 200, "conversion: {}", reply.text());
        let body = reply.json();
        let status = body["status"].as_str().expect("status").to_string();
        let id = body["conversion_id"]
            .as_str()
            .expect("conversion_id")
            .to_string();
        if status == "approved" {
            self.owed.insert(id.clone());
        }
        self.conversions.push(Conv {
            id: id.clone(),
            click_id,
            payout: body["payout"].as_f64().unwrap_or(0.0),
            revenue: body["revenue"].as_f64().unwrap_or(0.0),
            allowed: BTreeSet::from([status]),
        });
        id
    }

    fn random_status(&mut self) -> &'static str {
        STATUSES[self.rng.random_range(0..STATUSES.len())]
    }

    async fn click_id_post(&mut self, addr: SocketAddr, i: usize) -> bool {
        let click_id = self.clicks[i].id.clone();
        let status = self.random_status();
        let target = format!("/pixel.track?type=s2s&ClickID={click_id}&Status={status}");
        match send(addr, &raw("GET", &target, &[], b"")).await {
            Sent::Answered(reply) => {
                let id = self.record_conversion(&reply, Some(click_id));
                self.clicks[i].conversion = ConvAttempt::Acked(id);
                true
            }
            Sent::Refused => false,
            Sent::Lost => {
                self.clicks[i].conversion = ConvAttempt::Maybe;
                false
            }
        }
    }

    async fn afid_post(&mut self, addr: SocketAddr) -> bool {
        let status = self.random_status();
        let target = format!(
            "/pixel.track?type=s2s&CID={CAMPAIGN}&AFID={AFFILIATE}&SID=afid-w{}-{}&Status={status}",
            self.index, self.ops
        );
        match send(addr, &raw("GET", &target, &[], b"")).await {
            Sent::Answered(reply) => {
                self.record_conversion(&reply, None);
                true
            }
            Sent::Refused => false,
            Sent::Lost => {
                self.afid_slack += 1;
                false
            }
        }
    }

    async fn status_change(&mut self, addr: SocketAddr, i: usize) -> bool {
        let status = self.random_status();
        let id = self.conversions[i].id.clone();
        let body = json!({ "status": status }).to_string();
        let auth = format!("Bearer {TOKEN}");
        let request = raw(
            "POST",
            &format!("/api/v1/conversions/{id}/status"),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        );
        match send(addr, &request).await {
            Sent::Answered(reply) => {
                assert_eq!(reply.status, 200, "status change: {}", reply.text());
                assert_eq!(reply.json()["status"], status);
                self.conversions[i].allowed = BTreeSet::from([status.to_string()]);
                if status == "approved" {
                    self.owed.insert(id);
                }
                true
            }
            Sent::Refused => false,
            Sent::Lost => {
                self.conversions[i].allowed.insert(status.to_string());
                false
            }
        }
    }

    async fn config_change(&mut self, addr: SocketAddr, round: usize) -> bool {
        let id = CONFIG_CAMPAIGN_BASE + self.index as u32;
        let name = format!("w{}-r{round}-op{}", self.index, self.ops);
        let body = json!({
            "id": id,
            "name": name,
            "landing_url": "https://config.example/?c={click_id}",
            "payout": (self.ops % 7) as f64,
        })
        .to_string();
        let auth = format!("Bearer {TOKEN}");
        let request = raw(
            "PUT",
            &format!("/api/v1/campaigns/{id}"),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        );
        match send(addr, &request).await {
            Sent::Answered(reply) => {
                assert_eq!(reply.status, 200, "config change: {}", reply.text());
                self.campaign_name = Some(name);
                self.campaign_maybe = None;
                true
            }
            Sent::Refused => false,
            Sent::Lost => {
                self.campaign_maybe = Some(name);
                false
            }
        }
    }
}

async fn admin_get(addr: SocketAddr, path: &str) -> support::Reply {
    let auth = format!("Bearer {TOKEN}");
    support::request(
        addr,
        "GET",
        &format!("/api/v1{path}"),
        &[("Authorization", &auth)],
        b"",
    )
    .await
}

/// Every conversion the server holds, by ID.
async fn all_conversions(addr: SocketAddr) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/conversions?limit=1000&cursor={c}"),
            None => "/conversions?limit=1000".to_string(),
        };
        let reply = admin_get(addr, &path).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let page = reply.json();
        for item in page["items"].as_array().expect("items") {
            let id = item["conversion_id"].as_str().expect("id").to_string();
            out.insert(id, item.clone());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

/// Checks everything acknowledged so far against the restarted server, then folds what it
/// saw (outcomes of requests lost in flight) back into the model.
///
/// `adopted` holds conversions recorded from AFID posts lost in flight, found earlier.
async fn verify(
    addr: SocketAddr,
    workers: &mut [Worker],
    adopted: &mut BTreeSet<String>,
    round: usize,
    rng: &mut StdRng,
) {
    let held = all_conversions(addr).await;
    let mut known: BTreeSet<String> = adopted.clone();

    for w in workers.iter_mut() {
        // Clicks: the last round's all, any with a conversion lost in flight, and a sample.
        let mut check: Vec<usize> = (0..w.clicks.len())
            .filter(|&i| {
                w.clicks[i].round + 1 >= round || w.clicks[i].conversion == ConvAttempt::Maybe
            })
            .collect();
        for _ in 0..SAMPLE_OLDER_CLICKS.min(w.clicks.len()) {
            check.push(rng.random_range(0..w.clicks.len()));
        }
        for i in check {
            let click = w.clicks[i].clone();
            let reply = admin_get(addr, &format!("/clicks/{}", click.id)).await;
            assert_eq!(
                reply.status,
                200,
                "round {round}: acknowledged click {} (worker {}, sid {}) lost: {}",
                click.id,
                w.index,
                click.sid,
                reply.text()
            );
            let view = reply.json();
            assert_eq!(view["campaign_id"], CAMPAIGN, "{view}");
            assert_eq!(view["affiliate_id"], AFFILIATE, "{view}");
            assert_eq!(view["creative_id"], CREATIVE, "{view}");
            assert_eq!(view["sub_ids"][0], click.sid.as_str(), "{view}");
            let on_click: Vec<String> = view["conversions"]
                .as_array()
                .expect("conversions")
                .iter()
                .map(|c| c["conversion_id"].as_str().expect("id").to_string())
                .collect();
            match &click.conversion {
                ConvAttempt::None => assert!(
                    on_click.is_empty(),
                    "round {round}: click {} has conversions nobody posted: {on_click:?}",
                    click.id
                ),
                ConvAttempt::Acked(id) => assert_eq!(
                    on_click,
                    vec![id.clone()],
                    "round {round}: conversion of click {}",
                    click.id
                ),
                ConvAttempt::Maybe => {
                    assert!(on_click.len() <= 1, "{on_click:?}");
                    match on_click.first() {
                        Some(id) => {
                            // The lost post was recorded: adopt it with what the server says.
                            let c = &held[id];
                            w.conversions.push(Conv {
                                id: id.clone(),
                                click_id: Some(click.id.clone()),
                                payout: c["payout"].as_f64().unwrap_or(0.0),
                                revenue: c["revenue"].as_f64().unwrap_or(0.0),
                                allowed: BTreeSet::from([c["status"]
                                    .as_str()
                                    .expect("status")
                                    .to_string()]),
                            });
                            w.clicks[i].conversion = ConvAttempt::Acked(id.clone());
                        }
                        None => w.clicks[i].conversion = ConvAttempt::None,
                    }
                }
            }
        }

        // Conversions: every acknowledged one, with its values and an allowed status.
        for conv in w.conversions.iter_mut() {
            let held_conv = held.get(&conv.id).unwrap_or_else(|| {
                panic!(
                    "round {round}: acknowledged conversion {} (worker {}) lost",
                    conv.id, w.index
                )
            });
            let status = held_conv["status"].as_str().expect("status").to_string();
            assert!(
                conv.allowed.contains(&status),
                "round {round}: conversion {} is {status}, acknowledged {:?}",
                conv.id,
                conv.allowed
            );
            assert_eq!(
                held_conv["payout"].as_f64(),
                Some(conv.payout),
                "{held_conv}"
            );
            assert_eq!(
                held_conv["revenue"].as_f64(),
                Some(conv.revenue),
                "{held_conv}"
            );
            assert_eq!(
                held_conv["click_id"].as_str(),
                conv.click_id.as_deref(),
                "{held_conv}"
            );
            conv.allowed = BTreeSet::from([status]);
            known.insert(conv.id.clone());
        }

        // Config: the acknowledged change, or the one lost in flight.
        let id = CONFIG_CAMPAIGN_BASE + w.index as u32;
        let reply = admin_get(addr, &format!("/campaigns/{id}")).await;
        let held_name = (reply.status == 200)
            .then(|| reply.json()["name"].as_str().map(str::to_string))
            .flatten();
        let allowed = [w.campaign_name.clone(), w.campaign_maybe.clone()];
        let ok = held_name == w.campaign_name
            || (w.campaign_maybe.is_some() && held_name == w.campaign_maybe);
        assert!(
            ok,
            "round {round}: campaign {id} is {held_name:?}, acknowledged {allowed:?}"
        );
        w.campaign_name = held_name;
        w.campaign_maybe = None;
    }

    // Conversions nobody acknowledged come only from AFID posts lost in flight; adopt them.
    let afid_slack: u64 = workers.iter().map(|w| w.afid_slack).sum();
    let unknown: Vec<&Value> = held
        .iter()
        .filter(|(id, _)| !known.contains(*id))
        .map(|(_, c)| c)
        .collect();
    for c in &unknown {
        adopted.insert(c["conversion_id"].as_str().expect("id").to_string());
    }
    assert!(
        unknown.len() as u64 <= afid_slack,
        "round {round}: {} conversions nobody posted (only {afid_slack} posts were lost in flight): {unknown:?}",
        unknown.len()
    );
    for w in workers.iter_mut() {
        w.afid_slack = 0;
    }
    for id in adopted.iter() {
        assert!(
            held.contains_key(id),
            "round {round}: conversion {id}, seen after an earlier restart, lost"
        );
    }

    // The report's counters equal the recorded conversions exactly.
    let reply = admin_get(addr, "/report?group_by=campaign").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let totals = reply.json()["totals"].clone();
    let (mut conversions, mut approved, mut revenue, mut payout) = (0u64, 0u64, 0.0, 0.0);
    for c in held.values() {
        let status = c["status"].as_str().expect("status");
        if c["counted"] == true && status != "rejected" {
            conversions += 1;
            if status == "approved" {
                approved += 1;
                revenue += c["revenue"].as_f64().unwrap_or(0.0);
                payout += c["payout"].as_f64().unwrap_or(0.0);
            }
        }
    }
    assert_eq!(
        totals["conversions"], conversions,
        "round {round}: {totals}"
    );
    assert_eq!(totals["approved"], approved, "round {round}: {totals}");
    let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-6);
    assert!(
        close(totals["revenue"].as_f64(), revenue),
        "round {round}: revenue {revenue}: {totals}"
    );
    assert!(
        close(totals["payout"].as_f64(), payout),
        "round {round}: payout {payout}: {totals}"
    );
    let acked: u64 = workers.iter().map(|w| w.clicks_acked).sum();
    let slack: u64 = workers.iter().map(|w| w.click_slack).sum();
    let clicks = totals["clicks"].as_u64().expect("clicks");
    assert!(
        (acked..=acked + slack).contains(&clicks),
        "round {round}: report has {clicks} clicks; acknowledged {acked}, lost in flight {slack}"
    );
}

/// Starts the binary and SIGKILLs it as soon as it logs that it is re-routing records to
/// a new shard count (or that it is listening, when the count did not change). Returns
/// whether the kill landed during a reshard.
fn kill_during_start(config_path: &Path) -> bool {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_clicktrail"))
        .args(["serve", "--config"])
        .arg(config_path)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn clicktrail");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("shard count changed") || line.contains("clicktrail listening") {
                let _ = tx.send(line);
                break;
            }
        }
    });
    let seen = rx.recv_timeout(support::IO_TIMEOUT);
    let _ = child.kill();
    let _ = child.wait();
    let line = seen.expect("the interrupted start logged neither line in time");
    line.contains("shard count changed")
}

fn spawn(config_path: &Path) -> Process {
    let path = config_path.to_str().expect("utf-8 path");
    tokio::task::block_in_place(|| Process::spawn(&["--config", path], &[]))
}

#[test]
fn acknowledged_work_survives_a_kill_loop() {
    let seed = ops::seed("acknowledged_work_survives_a_kill_loop");
    let rounds: usize = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(kill_loop(seed, rounds));
}

async fn kill_loop(seed: u64, rounds: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config_path = dir.path().join("clicktrail.toml");
    // Half the deliveries need a retry: retries then straddle kills too.
    let sink = Sink::start_flaky().await;
    let mut workers: Vec<Worker> = (0..WORKERS).map(|i| Worker::new(i, seed)).collect();
    let mut adopted = BTreeSet::new();
    let mut killed_resharding = 0;
    let mut shards = 2;

    for round in 0..=rounds {
        // Some restarts change the shard count (SPEC 6: it may change between restarts).
        let reshard = round > 0 && rng.random_bool(0.3);
        if reshard {
            shards = rng.random_range(1..=4);
        }
        std::fs::write(&config_path, config_text(&data, shards, sink.addr)).expect("config");
        if reshard && rng.random_bool(0.5) {
            // Killed while re-routing every record to the new shard count (or, if the
            // count did not change, right after recovery): the next start must finish or
            // redo the reshard and lose nothing.
            if tokio::task::block_in_place(|| kill_during_start(&config_path)) {
                killed_resharding += 1;
            }
        }
        let process = spawn(&config_path);
        let addr = process.addr;
        verify(addr, &mut workers, &mut adopted, round, &mut rng).await;
        if round == rounds {
            // The last start only checks, then waits for every owed delivery.
            let owed: BTreeSet<String> = workers.iter().flat_map(|w| w.owed.clone()).collect();
            let missing = sink.await_all(&owed, DELIVERY_DEADLINE).await;
            assert!(
                missing.is_empty(),
                "{} of {} owed deliveries never reached the sink: {missing:?}",
                missing.len(),
                owed.len()
            );
            let total: u64 = workers.iter().map(|w| w.clicks_acked).sum();
            let retried = sink
                .received()
                .keys()
                .filter(|k| k.starts_with("refused:"))
                .count();
            eprintln!(
                "{rounds} rounds ({killed_resharding} more kills during a reshard): {total} acknowledged clicks, {} conversions, {} deliveries owed ({retried} first attempts refused by the sink)",
                workers.iter().map(|w| w.conversions.len()).sum::<usize>(),
                owed.len()
            );
            let status = process.terminate();
            assert!(status.success(), "graceful exit: {status:?}");
            break;
        }

        // Load, and the kill once `target` operations have been answered: the other
        // workers are then somewhere inside their own requests.
        let target = rng.random_range(0..=WORKERS * MAX_OPS_PER_ROUND / 2);
        let stop = Arc::new(AtomicBool::new(false));
        let (acked_tx, mut acked_rx) = tokio::sync::watch::channel(0usize);
        let tasks: Vec<_> = workers
            .drain(..)
            .map(|w| tokio::spawn(w.run(addr, round, stop.clone(), acked_tx.clone())))
            .collect();
        drop(acked_tx);
        let reached = tokio::time::timeout(ROUND_DEADLINE, acked_rx.wait_for(|n| *n >= target));
        // An error means every worker finished before the target: kill now.
        assert!(reached.await.is_ok(), "round {round}: load stalled");
        stop.store(true, Ordering::SeqCst);
        tokio::task::block_in_place(|| process.kill());
        for task in tasks {
            workers.push(task.await.expect("worker"));
        }
        workers.sort_by_key(|w| w.index);
    }
    sink.stop().await;
}
