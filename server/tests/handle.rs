//! Request handling through `routes::handle` without sockets: which listener surface serves
//! which route, method checks, admin on/off, and readiness while draining. Data-driven
//! through one `check` helper; the engine is real, on a temporary directory.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use server::routes::{handle, App, Surface};
use server::Config;
use std::sync::Arc;

struct Fixture {
    app: Arc<App>,
    _dir: tempfile::TempDir,
}

fn fixture(admin_token: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    config.admin.token = admin_token.to_string();
    config.storage.data_dir = dir.path().to_path_buf();
    config.storage.shards = 1;
    config.storage.sync = engine::SyncMode::Never;
    config.campaigns = vec![engine::Campaign {
        id: 1,
        landing_url: "https://shop.example/?c={click_id}".into(),
        ..engine::Campaign::default()
    }];
    config.affiliates = vec![engine::Affiliate {
        id: 7,
        ..engine::Affiliate::default()
    }];
    let engine = engine::Engine::open(
        engine::EngineConfig {
            storage: config.storage.clone(),
            dispatch: config.dispatch.clone(),
            campaigns: config.campaigns.clone(),
            affiliates: config.affiliates.clone(),
            webhooks: Vec::new(),
        },
        Arc::new(engine::SystemClock),
    )
    .expect("engine opens");
    Fixture {
        app: App::new(engine, Arc::new(config)),
        _dir: dir,
    }
}

/// Sends one request through the handler; returns the status and the `Allow` header.
async fn check(app: &App, surface: Surface, method: &str, target: &str) -> (u16, Option<String>) {
    let request = Request::builder()
        .method(method)
        .uri(target)
        .header("authorization", "Bearer tok")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let answer = handle(app, surface, request, "127.0.0.1:5555".parse().unwrap()).await;
    let allow = answer
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let status = answer.status().as_u16();
    let _ = answer.into_body().collect().await;
    (status, allow)
}

#[tokio::test]
async fn surfaces_serve_their_routes() {
    let fixture = fixture("tok");
    let click = "/click.track?CID=1&AFID=7";
    let cases = [
        (Surface::All, "GET", click, 302),
        (Surface::Public, "GET", click, 302),
        (Surface::Admin, "GET", click, 404),
        (Surface::All, "GET", "/api/v1/campaigns", 200),
        (Surface::Public, "GET", "/api/v1/campaigns", 404),
        (Surface::Admin, "GET", "/api/v1/campaigns", 200),
        (Surface::All, "GET", "/metrics", 200),
        (Surface::Public, "GET", "/metrics", 404),
        (Surface::Admin, "GET", "/metrics", 200),
        (Surface::Public, "GET", "/healthz", 200),
        (Surface::Admin, "GET", "/readyz", 200),
        (Surface::All, "GET", "/impression.track?CID=1&AFID=7", 200),
        (
            Surface::All,
            "POST",
            "/pixel.track?type=s2s&CID=1&AFID=7",
            200,
        ),
        (Surface::All, "GET", "/demo/landing", 404),
        (Surface::All, "GET", "/api/v1/nothing", 404),
    ];
    for (surface, method, target, want) in cases {
        let (status, _) = check(&fixture.app, surface, method, target).await;
        assert_eq!(status, want, "{surface:?} {method} {target}");
    }
}

#[tokio::test]
async fn wrong_methods_say_what_is_allowed() {
    let fixture = fixture("tok");
    let cases = [
        ("POST", "/click.track", "GET"),
        ("HEAD", "/click.track", "GET"),
        ("PUT", "/pixel.track", "GET, POST"),
        ("POST", "/impression.track", "GET"),
        ("DELETE", "/api/v1/campaigns", "GET, POST"),
        ("POST", "/api/v1/campaigns/1", "GET, PUT, DELETE"),
        ("GET", "/api/v1/conversions/x/status", "POST"),
        ("POST", "/api/v1/report", "GET"),
    ];
    for (method, target, allow) in cases {
        let (status, got) = check(&fixture.app, Surface::All, method, target).await;
        assert_eq!(
            (status, got.as_deref()),
            (405, Some(allow)),
            "{method} {target}"
        );
    }
}

#[tokio::test]
async fn without_a_token_the_admin_api_is_absent() {
    let fixture = fixture("");
    for target in ["/api/v1/campaigns", "/api/v1/report", "/api", "/api/v2/x"] {
        let (status, _) = check(&fixture.app, Surface::All, "GET", target).await;
        assert_eq!(status, 404, "{target}");
    }
}

#[tokio::test]
async fn readiness_fails_while_draining() {
    let fixture = fixture("tok");
    assert_eq!(
        check(&fixture.app, Surface::All, "GET", "/readyz").await.0,
        200
    );
    fixture.app.start_draining();
    assert_eq!(
        check(&fixture.app, Surface::All, "GET", "/readyz").await.0,
        503
    );
    assert_eq!(
        check(&fixture.app, Surface::All, "GET", "/healthz").await.0,
        200
    );
}
