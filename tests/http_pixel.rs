//! `/pixel.track` and `/impression.track` over HTTP against the real server and engine
//! (SPEC 2.2, 2.3): every seed flow end to end and every answer type.

mod support;

use serde_json::json;
use support::*;

fn cookie(campaign: u32, click_id: &str) -> String {
    format!("ct_{campaign}={click_id}")
}

#[tokio::test]
async fn standard_tracking_with_the_cookie() {
    let server = TestServer::start().await;
    let click_id = server
        .click_id(&format!("CID={C_PLAIN}&AFID={AFF}"), &[])
        .await;
    let reply = server
        .request(
            "GET",
            &format!("/pixel.track?CID={C_PLAIN}&MerchantReferenceID=o-1"),
            &[
                ("Cookie", &cookie(C_PLAIN, &click_id)),
                ("User-Agent", "other"),
            ],
            b"",
        )
        .await;
    assert!(reply.is_gif(), "{reply:?}");
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let view = server
        .admin("GET", &format!("/clicks/{click_id}"), None)
        .await
        .json();
    let conversions = view["conversions"].as_array().unwrap();
    assert_eq!(conversions.len(), 1, "{view}");
    assert_eq!(conversions[0]["matched_by"], "cookie");
    assert_eq!(conversions[0]["merchant_ref"], "o-1");
    assert_eq!(conversions[0]["status"], "approved");
    server.stop().await;
}

#[tokio::test]
async fn without_the_cookie_the_ip_backup_matches() {
    let server = TestServer::start().await;
    let visitor = [("User-Agent", "backup-agent"), ("Accept-Language", "fr")];
    let click_id = server
        .click_id(&format!("CID={C_PLAIN}&AFID={AFF}"), &visitor)
        .await;
    let reply = server
        .request("GET", &format!("/pixel.track?CID={C_PLAIN}"), &visitor, b"")
        .await;
    assert!(reply.is_gif());
    let view = server
        .admin("GET", &format!("/clicks/{click_id}"), None)
        .await
        .json();
    assert_eq!(view["conversions"][0]["matched_by"], "ip_backup", "{view}");
    server.stop().await;
}

#[tokio::test]
async fn click_id_post_once_then_duplicate() {
    let server = TestServer::start().await;
    let click_id = server
        .click_id(&format!("CID={C_PLAIN}&AFID={AFF}"), &[])
        .await;
    let first = server.s2s(&format!("ClickID={click_id}")).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("content-type"), Some("application/json"));
    let body = first.json();
    assert_eq!(body["status"], "approved");
    assert_eq!(body["click_id"], click_id.as_str());
    assert_eq!(body["payout"], 4.0);
    assert_eq!(body["revenue"], 10.0);
    assert_eq!(body["currency"], "USD");
    let conversion_id = body["conversion_id"].as_str().unwrap().to_string();

    // The alias, and a POSTed form, name the same click: a duplicate.
    let again = server
        .request(
            "POST",
            "/pixel.track",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            format!("type=s2s&transaction_id={click_id}").as_bytes(),
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.text());
    assert_eq!(again.json()["status"], "duplicate");
    assert_eq!(again.json()["conversion_id"], conversion_id.as_str());

    // And as JSON.
    let json_post = server
        .request(
            "POST",
            "/pixel.track",
            &[("Content-Type", "application/json")],
            json!({"type": "s2s", "click_id": click_id})
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(json_post.status, 409, "{}", json_post.text());

    let unknown = server.s2s("ClickID=doesnotexist").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["status"], "unknown_click");
    server.stop().await;
}

#[tokio::test]
async fn afid_posts_repeat_and_are_refused_where_not_allowed() {
    let server = TestServer::start().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let reply = server
            .s2s(&format!("CID={C_PLAIN}&AFID={AFF}&SID=s1"))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        ids.push(reply.json()["conversion_id"].as_str().unwrap().to_string());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three distinct conversions");
    let page = server
        .admin(
            "GET",
            &format!("/conversions?campaign={C_PLAIN}&affiliate={AFF}"),
            None,
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.text());
    let items = page.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|c| c["matched_by"] == "afid"));

    let refused = server.s2s(&format!("CID={C_NO_AFID}&AFID={AFF}")).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(refused.json()["status"], "forbidden");
    server.stop().await;
}

#[tokio::test]
async fn impressions_always_answer_the_gif_and_are_counted() {
    let server = TestServer::start().await;
    let good = format!("/impression.track?CID={C_PLAIN}&AFID={AFF}&ADID=2&SID=a");
    for _ in 0..2 {
        assert!(server.get(&good).await.is_gif());
    }
    for bad in [
        "/impression.track",
        "/impression.track?CID=999&AFID=7",
        "/impression.track?CID=x&AFID=%zz",
        "/impression.track?CID=1&AFID=7&SID1=%00",
    ] {
        let reply = server.get(bad).await;
        assert!(reply.is_gif(), "{bad}: {reply:?}");
        assert_eq!(reply.header("cache-control"), Some("no-store"));
    }
    let report = server
        .admin("GET", "/report?group_by=campaign", None)
        .await
        .json();
    let row = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["campaign_id"] == C_PLAIN)
        .cloned()
        .expect("a row for the campaign");
    assert_eq!(row["impressions"], 2, "{report}");
    assert_eq!(row["unique_impressions"], 1, "{report}");
    let metrics = server.get("/metrics").await.text();
    assert!(
        metrics.contains("clicktrail_pixel_errors_total"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn custom_parameters_apply_only_where_allowed() {
    let server = TestServer::start().await;
    let allowed = server
        .click_id(&format!("CID={C_CUSTOM}&AFID={AFF}"), &[])
        .await;
    let reply = server
        .s2s(&format!("ClickID={allowed}&AP=7.5&mp=20&Currency=EUR"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(
        (body["payout"].clone(), body["revenue"].clone()),
        (json!(7.5), json!(20.0))
    );
    assert_eq!(body["currency"], "EUR");

    // TotalSales is data: with payout_percent = 10, payout is 10 % of it.
    let percent = server
        .click_id(&format!("CID={C_CUSTOM}&AFID={AFF}"), &[])
        .await;
    let reply = server
        .s2s(&format!("ClickID={percent}&TotalSales=250"))
        .await;
    assert_eq!(reply.json()["payout"], 25.0, "{}", reply.text());

    let ignored = server
        .click_id(&format!("CID={C_PLAIN}&AFID={AFF}"), &[])
        .await;
    let reply = server
        .s2s(&format!(
            "ClickID={ignored}&payout=7.5&amount=20&currency=EUR"
        ))
        .await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(
        (body["payout"].clone(), body["revenue"].clone()),
        (json!(4.0), json!(10.0))
    );
    assert_eq!(body["currency"], "USD");
    let view = server
        .admin("GET", &format!("/clicks/{ignored}"), None)
        .await
        .json();
    let audit = view["conversions"][0]["audit"].to_string().to_lowercase();
    assert!(
        audit.contains("custom") || audit.contains("ignored"),
        "{audit}"
    );

    let bad = server.s2s(&format!("ClickID={ignored}&AP=-3")).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["status"], "invalid");
    assert!(bad.json()["reason"].as_str().unwrap().contains("AP"));
    server.stop().await;
}

#[tokio::test]
async fn server_posts_check_the_token_and_the_ip_allowlist() {
    let mut config = config();
    // The test client is 127.0.0.1: trust it as a proxy so X-Forwarded-For picks the IP.
    config.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let server = TestServer::start_with(config).await;
    let link = format!("CID={C_SECURED}&AFID={AFF}");
    let inside = [("X-Forwarded-For", "10.9.1.1")];
    let outside = [("X-Forwarded-For", "203.0.113.1")];

    let click = server.click_id(&link, &[]).await;
    let post = |token: Option<&str>| {
        let mut q = format!("/pixel.track?type=s2s&ClickID={click}");
        if let Some(t) = token {
            q.push_str(&format!("&token={t}"));
        }
        q
    };
    let reply = server.request("GET", &post(None), &inside, b"").await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(reply.json()["status"], "unauthorized");
    let reply = server
        .request("GET", &post(Some("wrong")), &inside, b"")
        .await;
    assert_eq!(reply.status, 401);
    let reply = server
        .request("GET", &post(Some(POSTBACK_TOKEN)), &outside, b"")
        .await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(reply.json()["status"], "forbidden");
    let bearer = format!("Bearer {POSTBACK_TOKEN}");
    let reply = server
        .request(
            "GET",
            &post(None),
            &[inside[0], ("Authorization", bearer.as_str())],
            b"",
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["status"], "approved");

    // Browser pixels need no token.
    let click = server.click_id(&link, &[]).await;
    let reply = server
        .request(
            "GET",
            &format!("/pixel.track?CID={C_SECURED}"),
            &[("Cookie", &cookie(C_SECURED, &click))],
            b"",
        )
        .await;
    assert!(reply.is_gif());
    let view = server
        .admin("GET", &format!("/clicks/{click}"), None)
        .await
        .json();
    assert_eq!(
        view["conversions"].as_array().map(Vec::len),
        Some(1),
        "{view}"
    );
    server.stop().await;
}

#[tokio::test]
async fn iframe_and_js_answers_carry_the_affiliates_browser_pixels() {
    let server = TestServer::start().await;
    let link = format!("CID={C_MULTI}&AFID={AFF_PIXELS}");

    let click = server.click_id(&link, &[]).await;
    let reply = server
        .request(
            "GET",
            &format!("/pixel.track?type=iframe&CID={C_MULTI}"),
            &[("Cookie", &cookie(C_MULTI, &click))],
            b"",
        )
        .await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let page = reply.text();
    assert!(
        page.contains(&format!("https://aff.example/img?c={click}&amp;p=4")),
        "{page}"
    );
    assert!(page.contains(&format!("window.conv='{click}'")), "{page}");

    let click = server.click_id(&link, &[]).await;
    let reply = server
        .request(
            "GET",
            &format!("/pixel.track?type=JS&CID={C_MULTI}"),
            &[("Cookie", &cookie(C_MULTI, &click))],
            b"",
        )
        .await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("application/javascript"));
    let script = reply.text();
    assert!(!script.contains("document.write"));
    // `&` is escaped inside the script's string literals.
    assert!(
        script.contains(&format!("https://aff.example/img?c={click}\\u0026p=4")),
        "{script}"
    );
    assert!(
        script.contains(&format!("window.conv='{click}'")),
        "{script}"
    );
    assert!(script.contains("appendChild"));

    // img and s2s merchant pixels carry no browser pixels.
    let click = server.click_id(&link, &[]).await;
    let reply = server.s2s(&format!("ClickID={click}")).await;
    assert!(!reply.text().contains("aff.example"));
    server.stop().await;
}

#[tokio::test]
async fn s2s_answers_cover_every_refusal() {
    let server = TestServer::start().await;
    let cases = [
        ("Status=bogus".to_string(), 400, "invalid"),
        ("type=s2s&AP=x".to_string(), 400, "invalid"),
        (format!("CID={C_MREF}&AFID={AFF}"), 400, "invalid"),
        ("ClickID=nope".to_string(), 404, "unknown_click"),
        (format!("CID={C_NO_AFID}&AFID={AFF}"), 403, "forbidden"),
    ];
    for (query, status, word) in cases {
        let reply = server.s2s(&query).await;
        assert_eq!(reply.status, status, "{query}: {}", reply.text());
        assert_eq!(reply.json()["status"], word, "{query}");
    }
    // Unattributed: recorded, nothing matched.
    let reply = server.s2s("Event=sale").await;
    assert!(
        reply.status == 200 || reply.status == 404,
        "{}",
        reply.text()
    );

    // Pending and rejected are honoured, and counted once.
    let click = server
        .click_id(&format!("CID={C_PLAIN}&AFID={AFF}"), &[])
        .await;
    let reply = server.s2s(&format!("ClickID={click}&Status=Pending")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["status"], "pending");

    // Merchant reference dedupe.
    let a = server
        .click_id(&format!("CID={C_MREF}&AFID={AFF}"), &[])
        .await;
    let b = server
        .click_id(&format!("CID={C_MREF}&AFID={AFF}"), &[])
        .await;
    assert_eq!(
        server.s2s(&format!("ClickID={a}&order_id=X1")).await.status,
        200
    );
    assert_eq!(
        server.s2s(&format!("ClickID={b}&order_id=X1")).await.status,
        409
    );
    server.stop().await;
}
