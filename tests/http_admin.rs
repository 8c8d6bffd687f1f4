//! The admin API over HTTP against the real server and engine (SPEC 3): authentication,
//! CRUD taking effect at once, unknown-field errors, records, and report figures equal to
//! what the test did, as JSON and CSV.

mod support;

use serde_json::json;
use support::*;

#[tokio::test]
async fn the_admin_api_needs_the_bearer_token() {
    let server = TestServer::start().await;
    let cases: [(&[(&str, &str)], u16); 5] = [
        (&[], 401),
        (&[("Authorization", "Bearer wrong")], 401),
        (&[("Authorization", "Basic dGVzdA==")], 401),
        (
            &[("Authorization", "Bearer test-admin-token-and-more")],
            401,
        ),
        (&[("Authorization", "bearer test-admin-token")], 200),
    ];
    for (headers, status) in cases {
        let reply = server
            .request("GET", "/api/v1/campaigns", headers, b"")
            .await;
        assert_eq!(reply.status, status, "{headers:?}");
        if status == 401 {
            assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
        }
    }
    server.stop().await;

    // No token configured: the admin API does not exist.
    let mut config = config();
    config.admin.token.clear();
    let server = TestServer::start_with(config).await;
    for path in ["/api/v1/campaigns", "/api/v1/report", "/api/anything"] {
        let reply = server
            .request("GET", path, &[("Authorization", "Bearer ")], b"")
            .await;
        assert_eq!(reply.status, 404, "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn campaign_crud_takes_effect_at_once() {
    let server = TestServer::start().await;
    let list = server.admin("GET", "/campaigns", None).await;
    assert_eq!(list.status, 200);
    assert!(list.json().as_array().unwrap().len() >= 8);

    let created = server
        .admin(
            "POST",
            "/campaigns",
            Some(json!({"id": 50, "name": "new", "landing_url": "https://new.example/?c={click_id}"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["cookie_life_days"], 30, "defaults filled in");
    let conflict = server
        .admin(
            "POST",
            "/campaigns",
            Some(json!({"id": 50, "landing_url": "https://x.example/"})),
        )
        .await;
    assert_eq!(conflict.status, 409);

    let click = server.get(&format!("/click.track?CID=50&AFID={AFF}")).await;
    assert_eq!(click.status, 302);
    assert!(click
        .header("location")
        .unwrap()
        .starts_with("https://new.example/?c="));

    let got = server.admin("GET", "/campaigns/50", None).await;
    assert_eq!(got.json()["name"], "new");
    let mut campaign = got.json();
    campaign["status"] = json!("paused");
    let put = server.admin("PUT", "/campaigns/50", Some(campaign)).await;
    assert_eq!(put.status, 200, "{}", put.text());
    let click = server.get(&format!("/click.track?CID=50&AFID={AFF}")).await;
    assert_eq!(click.status, 404, "paused at once");

    let mismatch = server
        .admin(
            "PUT",
            "/campaigns/50",
            Some(json!({"id": 51, "landing_url": "https://x.example/"})),
        )
        .await;
    assert_eq!(mismatch.status, 400);

    assert_eq!(
        server.admin("DELETE", "/campaigns/50", None).await.status,
        204
    );
    assert_eq!(server.admin("GET", "/campaigns/50", None).await.status, 404);
    assert_eq!(
        server.admin("DELETE", "/campaigns/50", None).await.status,
        404
    );
    assert_eq!(
        server.admin("GET", "/campaigns/abc", None).await.status,
        404
    );
    assert_eq!(
        server.admin("PATCH", "/campaigns/1", None).await.status,
        405
    );
    server.stop().await;
}

#[tokio::test]
async fn affiliates_with_pixels_and_webhooks() {
    let server = TestServer::start().await;
    let affiliate = json!({
        "id": 60, "name": "Nested",
        "pixels": [{"campaign": 1, "kind": "image", "url": "https://p.example/?c={click_id}"}]
    });
    let reply = server.admin("POST", "/affiliates", Some(affiliate)).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let got = server.admin("GET", "/affiliates/60", None).await.json();
    assert_eq!(got["pixels"][0]["kind"], "image");
    assert_eq!(got["pixels"][0]["fire_on"], json!(["approved"]));

    let reply = server
        .admin(
            "POST",
            "/webhooks",
            Some(json!({"url": "https://crm.example/hook"})),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let id = reply.json()["id"].as_u64().unwrap();
    assert!(id > 0, "an id is assigned");
    assert_eq!(
        server
            .admin("GET", &format!("/webhooks/{id}"), None)
            .await
            .status,
        200
    );
    assert_eq!(
        server
            .admin("DELETE", &format!("/webhooks/{id}"), None)
            .await
            .status,
        204
    );
    assert_eq!(
        server.admin("GET", "/webhooks", None).await.json(),
        json!([])
    );
    server.stop().await;
}

#[tokio::test]
async fn unknown_and_bad_fields_answer_400_naming_the_field() {
    let server = TestServer::start().await;
    let cases = [
        (
            "POST",
            "/campaigns",
            json!({"id": 70, "landing": "https://x.example/"}),
            "landing",
        ),
        (
            "POST",
            "/affiliates",
            json!({"id": 70, "pixels": [{"kind": "image", "uri": "x"}]}),
            "uri",
        ),
        (
            "POST",
            "/webhooks",
            json!({"id": 70, "url": "https://x.example", "secrets": ""}),
            "secrets",
        ),
        (
            "PUT",
            "/campaigns/1",
            json!({"id": 1, "cookie_days": 3}),
            "cookie_days",
        ),
    ];
    for (method, path, body, field) in cases {
        let reply = server.admin(method, path, Some(body)).await;
        assert_eq!(reply.status, 400, "{method} {path}: {}", reply.text());
        let error = reply.json();
        assert_eq!(error["field"], field, "{error}");
        assert!(error["error"].as_str().unwrap().contains(field));
    }
    let reply = server
        .request(
            "POST",
            "/api/v1/campaigns",
            &[
                ("Authorization", "Bearer test-admin-token"),
                ("Content-Type", "application/json"),
            ],
            b"{not json",
        )
        .await;
    assert_eq!(reply.status, 400);
    for query in [
        "from=2026-13-01",
        "to=yesterday",
        "group_by=week",
        "format=xml",
        "from=2026-02-01&to=2026-01-01",
    ] {
        let reply = server.admin("GET", &format!("/report?{query}"), None).await;
        assert_eq!(reply.status, 400, "{query}");
        assert!(reply.json()["field"].is_string(), "{query}");
    }
    let reply = server.admin("GET", "/conversions?limit=0", None).await;
    assert_eq!(reply.status, 400);
    let reply = server.admin("GET", "/deliveries?state=lost", None).await;
    assert_eq!(reply.json()["field"], "state");
    server.stop().await;
}

#[tokio::test]
async fn conversion_status_changes_and_records() {
    let server = TestServer::start().await;
    let click = server
        .click_id(&format!("CID={C_PLAIN}&AFID={AFF}"), &[])
        .await;
    let reply = server.s2s(&format!("ClickID={click}&Status=pending")).await;
    let conversion_id = reply.json()["conversion_id"].as_str().unwrap().to_string();

    let changed = server
        .admin(
            "POST",
            &format!("/conversions/{conversion_id}/status"),
            Some(json!({"status": "approved"})),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text());
    assert_eq!(changed.json()["status"], "approved");
    let bad = server
        .admin(
            "POST",
            &format!("/conversions/{conversion_id}/status"),
            Some(json!({"status": "approved", "note": 1})),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["field"], "note");
    let missing = server
        .admin(
            "POST",
            "/conversions/nope/status",
            Some(json!({"status": "rejected"})),
        )
        .await;
    assert_eq!(missing.status, 404);

    let page = server
        .admin("GET", "/conversions?status=approved", None)
        .await
        .json();
    assert!(page["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["conversion_id"] == conversion_id.as_str()));
    let view = server
        .admin("GET", &format!("/clicks/{click}"), None)
        .await
        .json();
    assert_eq!(view["conversions"][0]["status"], "approved");
    assert!(!view["conversions"][0]["audit"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        server.admin("GET", "/clicks/unknown", None).await.status,
        404
    );
    assert_eq!(
        server
            .admin("GET", "/deliveries?state=pending", None)
            .await
            .status,
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn report_figures_equal_what_happened_in_json_and_csv() {
    let server = TestServer::start().await;
    // 4 impressions, 3 clicks (2 unique: the third repeats the first visitor), 2 counted
    // conversions (one duplicate, one rejected): revenue 20, payout 8.
    for ua in ["a", "b", "c", "d"] {
        let reply = server
            .request(
                "GET",
                &format!("/impression.track?CID={C_PLAIN}&AFID={AFF}"),
                &[("User-Agent", ua)],
                b"",
            )
            .await;
        assert!(reply.is_gif());
    }
    let one = server
        .click_id(&format!("CID={C_PLAIN}&AFID={AFF}"), &[("User-Agent", "a")])
        .await;
    let two = server
        .click_id(&format!("CID={C_PLAIN}&AFID={AFF}"), &[("User-Agent", "b")])
        .await;
    let three = server
        .click_id(&format!("CID={C_PLAIN}&AFID={AFF}"), &[("User-Agent", "a")])
        .await;
    assert_eq!(server.s2s(&format!("ClickID={one}")).await.status, 200);
    assert_eq!(server.s2s(&format!("ClickID={one}")).await.status, 409);
    assert_eq!(server.s2s(&format!("ClickID={two}")).await.status, 200);
    assert_eq!(
        server
            .s2s(&format!("ClickID={three}&Status=rejected"))
            .await
            .status,
        200
    );

    let reply = server
        .admin(
            "GET",
            "/report?group_by=campaign,affiliate&format=json",
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let report = reply.json();
    assert_eq!(report["group_by"], json!(["campaign", "affiliate"]));
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{report}");
    let row = &rows[0];
    let want = [
        ("campaign_id", json!(C_PLAIN)),
        ("affiliate_id", json!(AFF)),
        ("impressions", json!(4)),
        ("unique_impressions", json!(4)),
        ("clicks", json!(3)),
        ("unique_clicks", json!(2)),
        ("duplicate_clicks", json!(1)),
        ("conversions", json!(2)),
        ("approved", json!(2)),
        ("revenue", json!(20.0)),
        ("payout", json!(8.0)),
        ("profit", json!(12.0)),
        ("margin", json!(0.6)),
        ("ctr", json!(0.75)),
        ("cr", json!(2.0 / 3.0)),
        ("epc", json!(8.0 / 3.0)),
        ("ecpm", json!(2000.0)),
    ];
    for (name, value) in &want {
        let got = &row[*name];
        match (got.as_f64(), value.as_f64()) {
            (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "{name}: {got} != {value}"),
            _ => assert_eq!(got, value, "{name}"),
        }
    }
    assert_eq!(report["totals"]["clicks"], 3);

    let csv = server
        .admin(
            "GET",
            "/report?group_by=campaign,affiliate&format=csv",
            None,
        )
        .await;
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let text = csv.text();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let values: Vec<&str> = lines.next().expect("one row").split(',').collect();
    for (name, value) in &want {
        let i = header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("{name} in {header:?}"));
        let got: f64 = values[i].parse().unwrap();
        assert!(
            (got - value.as_f64().unwrap()).abs() < 1e-6,
            "csv {name}: {}",
            values[i]
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn deliveries_are_listed_and_replayed_with_their_id() {
    let mut config = config();
    // A server pixel pointing at a closed loopback port: the attempt fails, the delivery
    // stays listed, and a replay keeps its ID.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    config.dispatch.allow_private_targets = true;
    config.affiliates.push(engine::Affiliate {
        id: 70,
        name: "postback".into(),
        pixels: vec![engine::Pixel {
            url: format!("http://127.0.0.1:{port}/pb?c={{click_id}}"),
            ..engine::Pixel::default()
        }],
        ..engine::Affiliate::default()
    });
    let server = TestServer::start_with(config).await;
    let click = server
        .click_id(&format!("CID={C_PLAIN}&AFID=70"), &[])
        .await;
    let reply = server.s2s(&format!("ClickID={click}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let list = server.admin("GET", "/deliveries", None).await;
    assert_eq!(list.status, 200, "{}", list.text());
    let list = list.json();
    let delivery = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["target"].as_str().unwrap_or("").contains(&click))
        .cloned()
        .unwrap_or_else(|| panic!("a delivery for the conversion: {list}"));
    let id = delivery["id"].as_str().unwrap();
    let state = delivery["state"].as_str().unwrap();
    let filtered = server
        .admin("GET", &format!("/deliveries?state={state}"), None)
        .await
        .json();
    assert!(filtered.as_array().unwrap().iter().any(|d| d["id"] == id));

    let replayed = server
        .admin("POST", &format!("/deliveries/{id}/replay"), None)
        .await;
    assert_eq!(replayed.status, 200, "{}", replayed.text());
    assert_eq!(replayed.json()["id"], id);
    assert_eq!(
        server
            .admin("POST", "/deliveries/nope/replay", None)
            .await
            .status,
        404
    );
    server.stop().await;
}
