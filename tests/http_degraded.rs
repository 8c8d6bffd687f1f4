//! When the log cannot persist (SPEC 6), over HTTP: clicks still redirect but untracked
//! (no cookie, no click ID), server posts answer 503 so senders retry, browser pixels still
//! get their gif, `/readyz` fails, admin writes answer 503. Faults come from the wal
//! crate's simulated disk.

mod support;

use engine::layout::StorageFactory;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use support::*;
use wal::storage::{FaultPlan, SimDisk, Storage};

/// One simulated disk per log directory.
#[derive(Clone, Default)]
struct Disks(Arc<Mutex<HashMap<PathBuf, SimDisk>>>);

impl Disks {
    fn factory(&self) -> StorageFactory {
        let disks = self.clone();
        Arc::new(move |dir: &Path| {
            let mut map = disks.0.lock().expect("disks");
            let disk = map.entry(dir.to_path_buf()).or_default().clone();
            Ok(Arc::new(disk) as Arc<dyn Storage>)
        })
    }

    fn fail_every_sync(&self) {
        for disk in self.0.lock().expect("disks").values() {
            disk.set_faults(FaultPlan {
                eio_after_syncs: Some(0),
                ..FaultPlan::default()
            });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_log_degrades_over_http_and_never_pretends() {
    let disks = Disks::default();
    let mut config = config();
    config.storage.sync = engine::SyncMode::Always;
    let factory = disks.factory();
    let server = TestServer::start_opening(config, move |engine_config| {
        engine::Engine::open_on(
            engine_config,
            Arc::new(engine::SystemClock),
            engine::dispatcher::DispatchOptions::default(),
            factory,
        )
    })
    .await;
    let link = format!("/click.track?CID={C_PLAIN}&AFID={AFF}");
    let before = server
        .click_id(&format!("CID={C_PLAIN}&AFID={AFF}"), &[])
        .await;
    assert_eq!(server.get("/readyz").await.status, 200);

    disks.fail_every_sync();
    for _ in 0..3 {
        let reply = server.get(&link).await;
        assert_eq!(reply.status, 302, "{}", reply.text());
        let location = reply.header("location").unwrap();
        assert!(
            location.starts_with(&format!("{LANDING}?ref=&")),
            "{location}"
        );
        assert!(
            reply.headers_named("set-cookie").is_empty(),
            "no cookie when untracked"
        );
    }
    let post = server.s2s(&format!("CID={C_PLAIN}&AFID={AFF}")).await;
    assert_eq!(post.status, 503, "{}", post.text());
    assert_eq!(post.json()["status"], "unavailable");
    assert_eq!(post.header("retry-after"), Some("1"));
    let cookie = format!("ct_{C_PLAIN}={before}");
    let pixel = server
        .request(
            "GET",
            &format!("/pixel.track?CID={C_PLAIN}"),
            &[("Cookie", &cookie)],
            b"",
        )
        .await;
    assert!(pixel.is_gif(), "browsers still get the gif");
    assert!(server
        .get(&format!("/impression.track?CID={C_PLAIN}&AFID={AFF}"))
        .await
        .is_gif());
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(!ready.text().is_empty(), "readyz says why");
    let write = server
        .admin(
            "POST",
            "/campaigns",
            Some(serde_json::json!({"id": 90, "landing_url": "https://x.example/"})),
        )
        .await;
    assert_eq!(write.status, 503, "{}", write.text());
    let metrics = server.get("/metrics").await.text();
    assert!(metrics.contains("reason=\"untracked\""), "{metrics}");
    assert_eq!(server.get("/healthz").await.status, 200, "alive, not ready");
}
