//! Operations over HTTP (SPEC 4, 6): health, readiness and metrics, graceful shutdown with
//! an in-flight request, the separate admin listener, restart after SIGKILL of the real
//! binary, and the embedded-defaults demo from click to report.

mod support;

use std::sync::Arc;
use support::*;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = TestServer::start().await;
    assert_eq!(server.get("/healthz").await.status, 200);
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(
        server
            .get(&format!("/click.track?CID={C_PLAIN}&AFID={AFF}"))
            .await
            .status,
        302
    );
    let metrics = server.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = metrics.text();
    let requests = metric(
        &text,
        "clicktrail_http_requests_total{route=\"click\",outcome=\"302\"}",
    );
    assert!(requests.unwrap_or(0.0) >= 1.0, "{text}");
    assert!(
        text.contains("clicktrail_http_request_duration_seconds_bucket{route=\"click\""),
        "{text}"
    );
    // The engine records through the same process-wide recorder.
    assert!(text.contains("clicktrail_clicks_total"), "{text}");
    server.stop().await;
}

/// Shutdown while a request is in flight: the request is answered, then `run` returns and
/// the port is closed. `Expect: 100-continue` tells us exactly when the handler is running
/// (hyper sends `100 Continue` when it starts reading the body), without any sleep.
#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let mut server = TestServer::start().await;
    let addr = server.addr;
    let body = format!("type=s2s&CID={C_PLAIN}&AFID={AFF}");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /pixel.track HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let interim = tokio::time::timeout(IO_TIMEOUT, read_reply(&mut stream))
        .await
        .expect("100 Continue in time")
        .unwrap();
    assert_eq!(interim.status, 100);

    let task = server.begin_stop();
    stream.write_all(body.as_bytes()).await.unwrap();
    let reply = tokio::time::timeout(IO_TIMEOUT, read_reply(&mut stream))
        .await
        .expect("the in-flight request is answered")
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["status"], "approved");
    let finished = tokio::time::timeout(IO_TIMEOUT, task).await;
    assert!(matches!(finished, Ok(Ok(Ok(())))), "{finished:?}");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
    server.engine.shutdown().await;
}

#[tokio::test]
async fn a_separate_admin_listener_takes_the_api_and_metrics() {
    let mut config = config();
    config.admin.listen = "127.0.0.1:0".into();
    let server = TestServer::start_with(config).await;
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin_listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_task = tokio::spawn(server::run_admin(
        admin_listener,
        server.engine.clone(),
        Arc::clone(&server.config),
        async {
            let _ = stopped.await;
        },
    ));
    let auth = [("Authorization", "Bearer test-admin-token")];
    assert_eq!(
        server
            .request("GET", "/api/v1/campaigns", &auth, b"")
            .await
            .status,
        404
    );
    assert_eq!(server.get("/metrics").await.status, 404);
    assert_eq!(
        server
            .get(&format!("/click.track?CID={C_PLAIN}&AFID={AFF}"))
            .await
            .status,
        302
    );
    assert_eq!(
        request(admin_addr, "GET", "/api/v1/campaigns", &auth, b"")
            .await
            .status,
        200
    );
    assert_eq!(
        request(admin_addr, "GET", "/metrics", &[], b"")
            .await
            .status,
        200
    );
    assert_eq!(
        request(admin_addr, "GET", "/readyz", &[], b"").await.status,
        200
    );
    assert_eq!(
        request(
            admin_addr,
            "GET",
            &format!("/click.track?CID={C_PLAIN}&AFID={AFF}"),
            &[],
            b""
        )
        .await
        .status,
        404
    );
    let _ = stop.send(());
    assert!(matches!(admin_task.await, Ok(Ok(()))));
    server.stop().await;
}

const RESTART_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"

[storage]
shards = 2
sync = "always"
# Small segments: less to preallocate on each start.
segment_size_bytes = 2097152

[admin]
token = "restart-token"

[[campaigns]]
id = 1
name = "restart"
landing_url = "https://shop.example/?c={click_id}"
revenue = 10.0
payout = 4.0

[[affiliates]]
id = 7
name = "aff"
"#;

/// SIGKILL after N acknowledged clicks and conversions, restart on the same data directory,
/// and find every one of them.
#[tokio::test]
async fn acknowledged_records_survive_sigkill() {
    const CLICKS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("clicktrail.toml");
    std::fs::write(&config_path, RESTART_CONFIG).unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let env = [("CLICKTRAIL_STORAGE_DATA_DIR", data)];
    let config_arg = config_path.to_str().unwrap();

    let process = Process::spawn(&["--config", config_arg], &env);
    let mut acknowledged = Vec::new();
    for i in 0..CLICKS {
        let reply = request(
            process.addr,
            "GET",
            &format!("/click.track?CID=1&AFID=7&SID=s{i}&R=0"),
            &[],
            b"",
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let click_id = reply.text();
        let conversion = if i % 2 == 0 {
            let reply = request(
                process.addr,
                "GET",
                &format!("/pixel.track?type=s2s&ClickID={click_id}"),
                &[],
                b"",
            )
            .await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            Some(reply.json()["conversion_id"].as_str().unwrap().to_string())
        } else {
            None
        };
        acknowledged.push((click_id, conversion));
    }
    process.kill();

    let process = Process::spawn(&["--config", config_arg], &env);
    let auth = [("Authorization", "Bearer restart-token")];
    for (i, (click_id, conversion)) in acknowledged.iter().enumerate() {
        let reply = request(
            process.addr,
            "GET",
            &format!("/api/v1/clicks/{click_id}"),
            &auth,
            b"",
        )
        .await;
        assert_eq!(reply.status, 200, "click {i} lost: {}", reply.text());
        let view = reply.json();
        assert_eq!(view["sub_ids"][0], format!("s{i}"));
        let conversions = view["conversions"].as_array().unwrap();
        match conversion {
            Some(id) => assert_eq!(
                conversions[0]["conversion_id"],
                id.as_str(),
                "conversion of click {i}"
            ),
            None => assert!(conversions.is_empty()),
        }
    }
    // A conversion posted again after the restart is still a duplicate.
    let (click_id, _) = &acknowledged[0];
    let reply = request(
        process.addr,
        "GET",
        &format!("/pixel.track?type=s2s&ClickID={click_id}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    let status = process.terminate();
    assert!(status.success(), "graceful exit on SIGTERM: {status:?}");
}

/// Embedded defaults: no config file; the demo link, landing page, checkout pixel and report.
#[tokio::test]
async fn the_demo_runs_on_embedded_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [
        ("CLICKTRAIL_SERVER_LISTEN", "127.0.0.1:0"),
        ("CLICKTRAIL_STORAGE_DATA_DIR", data.to_str().unwrap()),
    ];
    let mut process = Process::spawn(&[], &env);
    let token_line = process.wait_for_line("admin token:");
    let token = token_line.rsplit(' ').next().unwrap().to_string();
    let link_line = process.wait_for_line("demo: open ");
    let link = link_line.rsplit(' ').next().unwrap().to_string();
    let port = process.addr.port();
    assert!(
        link.starts_with(&format!("http://localhost:{port}/click.track?")),
        "{link}"
    );
    let addr = process.addr;

    let path = link.split_once(&format!(":{port}")).unwrap().1;
    let click = request(addr, "GET", path, &[], b"").await;
    assert_eq!(click.status, 302, "{}", click.text());
    let landing = click.header("location").unwrap().to_string();
    assert!(
        landing.starts_with(&format!("http://localhost:{port}/demo/landing?")),
        "{landing}"
    );
    let cookie = click
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();

    let landing_path = landing.split_once(&format!(":{port}")).unwrap().1;
    let page = request(addr, "GET", landing_path, &[("Cookie", &cookie)], b"").await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("/demo/checkout"));
    let checkout = request(addr, "GET", "/demo/checkout", &[("Cookie", &cookie)], b"").await;
    let html = checkout.text();
    let pixel = html
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the conversion pixel")
        .replace("&amp;", "&");
    assert!(pixel.starts_with("/pixel.track?"), "{pixel}");
    let fired = request(addr, "GET", &pixel, &[("Cookie", &cookie)], b"").await;
    assert!(fired.is_gif());

    let bearer = format!("Bearer {token}");
    let report = request(
        addr,
        "GET",
        "/api/v1/report?group_by=campaign",
        &[("Authorization", &bearer)],
        b"",
    )
    .await;
    assert_eq!(report.status, 200, "{}", report.text());
    let totals = &report.json()["totals"];
    assert_eq!(totals["clicks"], 1, "{totals}");
    assert_eq!(totals["conversions"], 1, "{totals}");
    assert_eq!(
        request(addr, "GET", "/demo/report", &[], b"").await.status,
        200
    );

    // The token is kept: the same one after a restart.
    assert!(process.terminate().success());
    let mut process = Process::spawn(&[], &env);
    let again = process.wait_for_line("admin token:");
    assert_eq!(again.rsplit(' ').next().unwrap(), token);
}
