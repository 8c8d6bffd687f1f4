//! When the log cannot persist (SPEC 6, issue 7), over HTTP: clicks still redirect to the
//! landing page but without a click ID or cookie and are counted as untracked, conversions
//! answer 503, `/readyz` fails, the log says why once per condition (not once per request),
//! and after a restart everything acknowledged before the fault is there.
//!
//! Faults are injected under the real engine and server through the wal crate's simulated
//! disk (`Engine::open_on` with a storage factory): a full disk (ENOSPC when a segment
//! must be allocated) and an I/O error on sync (EIO). One test function runs both, because
//! it captures the process-wide log to count the fault lines.

mod support;

use engine::layout::StorageFactory;
use engine::{Engine, SyncMode};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use support::{config, metric, request, Reply, ADMIN_TOKEN, AFF, C_PLAIN};
use tokio::sync::oneshot;
use wal::storage::FaultPlan;

/// Clicks sent at most while waiting for a full disk to bite: a shard's preallocated
/// segment (2 MiB) holds a few hundred of the ~5 KiB clicks below, and there are two.
const MAX_CLICKS_TO_FILL: usize = 4000;
/// Requests sent while degraded, to show the fault is logged once, not per request.
const DEGRADED_REQUESTS: usize = 25;
const SHARDS: usize = 2;

/// The process-wide log, captured.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn lines_with(&self, needle: &str) -> Vec<String> {
        let bytes = self.0.lock().expect("capture").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

/// One simulated disk per log directory.
type Disks = engine::layout::SimulatedDisks;

struct Running {
    addr: std::net::SocketAddr,
    engine: Engine,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn get(&self, target: &str) -> Reply {
        request(self.addr, "GET", target, &[], b"").await
    }

    async fn admin(&self, path: &str) -> Reply {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        request(
            self.addr,
            "GET",
            &format!("/api/v1{path}"),
            &[("Authorization", &auth)],
            b"",
        )
        .await
    }

    /// Stops serving and drops the engine without its shutdown: a crash, as far as the
    /// logs are concerned.
    async fn crash(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        drop(self.engine);
    }
}

async fn start(data_dir: &Path, storage: StorageFactory) -> Running {
    let mut config = config();
    config.storage.data_dir = data_dir.to_path_buf();
    config.storage.shards = SHARDS;
    // Every answer waits for its sync, so an EIO on sync reaches the request.
    config.storage.sync = SyncMode::Always;
    // The smallest segment, so a full disk bites after a few hundred clicks.
    config.storage.segment_size_bytes = engine::config::MIN_SEGMENT_BYTES;
    let engine_config = engine::EngineConfig {
        storage: config.storage.clone(),
        dispatch: config.dispatch.clone(),
        campaigns: config.campaigns.clone(),
        affiliates: config.affiliates.clone(),
        webhooks: config.webhooks.clone(),
    };
    let engine = tokio::task::block_in_place(|| {
        Engine::open_on(
            engine_config,
            Arc::new(engine::SystemClock),
            engine::dispatcher::DispatchOptions::default(),
            storage,
        )
    })
    .expect("engine opens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server::run(
        listener,
        engine.clone(),
        Arc::new(config),
        async {
            let _ = stopped.await;
        },
    ));
    Running {
        addr,
        engine,
        stop,
        task,
    }
}

/// A click with every value at its bound, so few clicks fill a segment.
fn big_click(n: usize) -> String {
    let pad = "p".repeat(240);
    let sids: String = (1..=10).map(|i| format!("&SID{i}={n}-{pad}")).collect();
    let extras: String = (0..10).map(|i| format!("&x{i}={n}{pad}")).collect();
    format!("/click.track?CID={C_PLAIN}&AFID={AFF}{sids}{extras}")
}

/// What a degraded click answer looks like: the landing page, no click ID, no cookie.
fn assert_untracked(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 302, "{what}: {}", reply.text());
    assert!(
        reply.headers_named("set-cookie").is_empty(),
        "{what}: no cookie while degraded: {reply:?}"
    );
    let location = reply.header("location").expect("location");
    assert!(
        location.starts_with(&format!("{}?ref=&a={AFF}", support::LANDING)),
        "{what}: landing page without a click ID: {location}"
    );
}

/// Sends clicks until one comes back untracked; returns the click IDs acknowledged first.
async fn click_until_degraded(server: &Running, label: &str) -> Vec<String> {
    let mut acked = Vec::new();
    for n in 0..MAX_CLICKS_TO_FILL {
        let reply = server.get(&big_click(n)).await;
        assert_eq!(reply.status, 302, "{label}: {}", reply.text());
        match support::query_value(reply.header("location").expect("location"), "ref") {
            Some(id) if !id.is_empty() => {
                assert_eq!(reply.headers_named("set-cookie").len(), 1, "{label}");
                acked.push(id);
            }
            _ => {
                assert_untracked(&reply, label);
                return acked;
            }
        }
    }
    panic!("{label}: still tracking after {MAX_CLICKS_TO_FILL} clicks on a failing disk");
}

/// The degraded contract, checked while the fault lasts.
///
/// Conversions are posted for `click_id`, a click acknowledged on the failing shard (a
/// shard with room left may still persist, and rightly acknowledges what it persists).
/// `logged_before` is the number of fault lines before this condition began.
async fn assert_degraded(
    server: &Running,
    log: &Capture,
    click_id: &str,
    logged_before: usize,
    label: &str,
) {
    for n in 0..DEGRADED_REQUESTS {
        assert_untracked(&server.get(&big_click(n)).await, label);
        let r0 = server
            .get(&format!("/click.track?CID={C_PLAIN}&AFID={AFF}&R=0"))
            .await;
        assert_eq!(r0.status, 200, "{label}");
        assert!(r0.body.is_empty(), "{label}: no click ID while degraded");
        let post = server
            .get(&format!("/pixel.track?type=s2s&ClickID={click_id}"))
            .await;
        assert_eq!(post.status, 503, "{label}: {}", post.text());
        assert_eq!(post.json()["status"], "unavailable", "{label}");
        // Browser pixels still answer the harmless gif.
        assert!(server
            .get(&format!("/pixel.track?CID={C_PLAIN}&AFID={AFF}"))
            .await
            .is_gif());
    }
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status, 503, "{label}: readyz while degraded");
    assert_eq!(server.get("/healthz").await.status, 200, "{label}: alive");
    let metrics = server.get("/metrics").await.text();
    let untracked = metric(&metrics, "clicktrail_clicks_untracked_total").unwrap_or(0.0);
    assert!(
        untracked >= (2 * DEGRADED_REQUESTS) as f64,
        "{label}: untracked clicks counted: {untracked}"
    );
    // Once per condition: at most one line per shard log, however many requests failed.
    let faults = log.lines_with("storage fault");
    let faults = &faults[logged_before.min(faults.len())..];
    assert!(
        !faults.is_empty() && faults.len() <= SHARDS,
        "{label}: the fault is logged once per shard, not per request: {faults:#?}"
    );
}

/// After a restart on what the disk kept: every acknowledged click is there, tracking works.
async fn assert_recovered(server: &Running, acked: &[String], label: &str) {
    assert_eq!(server.get("/readyz").await.status, 200, "{label}");
    for id in acked {
        let view = server.admin(&format!("/clicks/{id}")).await;
        assert_eq!(view.status, 200, "{label}: acknowledged click {id} lost");
    }
    let fresh = server
        .get(&format!("/click.track?CID={C_PLAIN}&AFID={AFF}"))
        .await;
    assert_eq!(fresh.status, 302);
    assert_eq!(
        fresh.headers_named("set-cookie").len(),
        1,
        "{label}: tracking again"
    );
}

/// The process-wide log, captured once for every test in this file.
fn log() -> &'static Capture {
    static LOG: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = Capture::default();
        let writer = log.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter("warn")
            .with_writer(move || writer.clone())
            .try_init();
        log
    })
}

/// The simulated-disk scenario counts lines of the shared log: one run at a time.
static SIMULATED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_disk_degrades_over_http_and_loses_nothing_acknowledged() {
    let _one_at_a_time = SIMULATED.lock().await;
    simulated_disk_faults(log()).await;
}

/// ENOSPC, then EIO, on the simulated disk under the in-process server.
async fn simulated_disk_faults(log: &Capture) {
    let log = log.clone();
    let logged_at_start = log.lines_with("storage fault").len();

    // Disk full: appends go on until a shard must allocate its next segment.
    let dir = tempfile::tempdir().expect("tempdir");
    let disks = Disks::default();
    let server = start(dir.path(), disks.factory()).await;
    let conversion = server
        .get(&format!(
            "/pixel.track?type=s2s&CID={C_PLAIN}&AFID={AFF}&SID=before"
        ))
        .await;
    assert_eq!(conversion.status, 200, "{}", conversion.text());
    let conversion_id = conversion.json()["conversion_id"]
        .as_str()
        .expect("id")
        .to_string();
    disks.set_faults(FaultPlan {
        enospc_after_allocations: Some(0),
        ..FaultPlan::default()
    });
    let acked = click_until_degraded(&server, "ENOSPC").await;
    eprintln!("ENOSPC after {} acknowledged clicks", acked.len());
    let last = acked
        .last()
        .expect("clicks fit in the preallocated segment");
    assert_degraded(&server, &log, last, logged_at_start, "ENOSPC").await;
    server.crash().await;

    // Power loss, space freed, restart: nothing acknowledged is lost.
    let disks = disks.crashed(1);
    let server = start(dir.path(), disks.factory()).await;
    assert_recovered(&server, &acked, "after ENOSPC").await;
    let conversions = server.admin("/conversions").await.text();
    assert!(
        conversions.contains(&conversion_id),
        "acknowledged conversion lost"
    );

    // EIO on sync: the next commit fails and poisons the shard logs.
    let before_eio = log.lines_with("storage fault").len();
    let click = server
        .get(&format!("/click.track?CID={C_PLAIN}&AFID={AFF}&R=0"))
        .await;
    assert_eq!(click.status, 200);
    let acked_before_eio = click.text();
    disks.set_faults(FaultPlan {
        eio_after_syncs: Some(0),
        ..FaultPlan::default()
    });
    let mut acked = vec![acked_before_eio.clone()];
    acked.extend(click_until_degraded(&server, "EIO").await);
    eprintln!("EIO after {} acknowledged clicks", acked.len());
    assert_degraded(&server, &log, &acked_before_eio, before_eio, "EIO").await;
    server.crash().await;

    let disks = disks.crashed(2);
    let server = start(dir.path(), disks.factory()).await;
    assert_recovered(&server, &acked, "after EIO").await;
    let _ = server.stop.send(());
    let _ = server.task.await;
    server.engine.shutdown().await;
}

/// A real full file system: a small tmpfs under the real binary. Needs root (or a mount
/// namespace); where mounting is not allowed the test says why and checks the simulated
/// disk instead, so it never passes without checking something.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tmpfs_degrades_the_real_binary_and_a_restart_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    let mount = match Tmpfs::mount(&data, TMPFS_KIB) {
        Ok(mount) => mount,
        Err(why) => {
            eprintln!(
                "tmpfs test: cannot mount a tmpfs here ({why}); checking the simulated disk instead"
            );
            let _one_at_a_time = SIMULATED.lock().await;
            simulated_disk_faults(log()).await;
            return;
        }
    };
    let config = dir.path().join("clicktrail.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"

[storage]
data_dir = "{}"
shards = 1
sync = "always"
segment_size_bytes = 2097152
# No snapshot while filling: the shard segment is what must run out of room.
snapshot_every_records = 1000000

[admin]
token = "{ADMIN_TOKEN}"

[[campaigns]]
id = {C_PLAIN}
name = "c"
landing_url = "{}?ref={{click_id}}&a={{affiliate_id}}"

[[affiliates]]
id = {AFF}
name = "a"
"#,
            data.display(),
            support::LANDING
        ),
    )
    .expect("config");
    let config = config.to_str().expect("utf-8").to_string();
    let spawn =
        || tokio::task::block_in_place(|| support::Process::spawn(&["--config", &config], &[]));

    let mut process = spawn();
    let addr = process.addr;
    let get = |target: String| async move { request(addr, "GET", &target, &[], b"").await };
    let post = get(format!("/pixel.track?type=s2s&CID={C_PLAIN}&AFID={AFF}")).await;
    assert_eq!(post.status, 200, "{}", post.text());
    let conversion_id = post.json()["conversion_id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut acked = Vec::new();
    let mut degraded = None;
    for n in 0..MAX_CLICKS_TO_FILL {
        let reply = get(big_click(n)).await;
        assert_eq!(reply.status, 302, "{}", reply.text());
        match support::query_value(reply.header("location").expect("location"), "ref") {
            Some(id) if !id.is_empty() => acked.push(id),
            _ => {
                degraded = Some(reply);
                break;
            }
        }
    }
    let first = degraded.expect("the tmpfs filled up");
    assert_untracked(&first, "tmpfs full");
    eprintln!("tmpfs full after {} acknowledged clicks", acked.len());
    let last = acked
        .last()
        .expect("clicks fit in the preallocated segment")
        .clone();
    for n in 0..DEGRADED_REQUESTS {
        assert_untracked(&get(big_click(n)).await, "tmpfs full");
        let post = get(format!("/pixel.track?type=s2s&ClickID={last}")).await;
        assert_eq!(post.status, 503, "{}", post.text());
    }
    assert_eq!(get("/readyz".into()).await.status, 503);
    process.wait_for_line("storage fault");
    let lines = process.drain_lines();
    let faults: Vec<&str> = lines
        .lines()
        .filter(|l| l.contains("storage fault"))
        .collect();
    assert_eq!(
        faults.len(),
        1,
        "logged once for the one shard: {faults:#?}"
    );
    assert!(
        faults[0].contains("No space left") || faults[0].contains("space"),
        "the log says why: {}",
        faults[0]
    );

    // Space freed; the poisoned log needs a restart, which recovers everything.
    mount.resize(4 * TMPFS_KIB).expect("remount bigger");
    process.kill();
    let process = spawn();
    let addr = process.addr;
    assert_eq!(request(addr, "GET", "/readyz", &[], b"").await.status, 200);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    for id in &acked {
        let view = request(
            addr,
            "GET",
            &format!("/api/v1/clicks/{id}"),
            &[("Authorization", &auth)],
            b"",
        )
        .await;
        assert_eq!(view.status, 200, "acknowledged click {id} lost");
    }
    let conversions = request(
        addr,
        "GET",
        "/api/v1/conversions",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert!(
        conversions.text().contains(&conversion_id),
        "acknowledged conversion lost"
    );
    let fresh = request(
        addr,
        "GET",
        &format!("/click.track?CID={C_PLAIN}&AFID={AFF}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(fresh.headers_named("set-cookie").len(), 1, "tracking again");
    process.kill();
    drop(mount);
}

/// Room for the control log's and the one shard's 2 MiB segments, each with the next one
/// prepared ahead (four segments), plus their small files, but not for a fifth segment.
const TMPFS_KIB: u64 = 8 * 1024 + 512;

/// A mounted tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size_kib: u64) -> Result<Tmpfs, String> {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_kib}k"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount exited {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(at.to_path_buf()))
    }

    fn resize(&self, size_kib: u64) -> Result<(), String> {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size_kib}k")])
            .arg(&self.0)
            .status()
            .map_err(|e| e.to_string())?;
        status
            .success()
            .then_some(())
            .ok_or(format!("remount exited {status}"))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}
