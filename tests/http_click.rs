//! `GET /click.track` over HTTP against the real server and engine (SPEC 2.1): redirect,
//! cookie attributes, the C/R/T flags, aliases and case, fallback for broken links, no open
//! redirect, and the client IP behind trusted proxies.

mod support;

use support::*;

#[tokio::test]
async fn a_click_redirects_to_the_landing_page_with_the_cookie() {
    let server = TestServer::start().await;
    let reply = server
        .get(&format!(
            "/click.track?CID={C_PLAIN}&AFID={AFF}&SID=abc,def&ADID=5"
        ))
        .await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let location = reply.header("location").expect("Location");
    assert!(location.starts_with(LANDING), "{location}");
    let click_id = query_value(location, "ref").expect("click id in the landing URL");
    assert!(!click_id.is_empty() && click_id.len() <= 32, "{click_id}");
    assert!(click_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(query_value(location, "a").as_deref(), Some("7"));
    assert_eq!(query_value(location, "s").as_deref(), Some("abc"));
    let cookies = reply.headers_named("set-cookie");
    assert_eq!(
        cookies,
        vec![format!(
            "ct_{C_PLAIN}={click_id}; Max-Age={}; Path=/; HttpOnly; SameSite=Lax",
            30 * 86_400
        )]
    );

    let view = server
        .admin("GET", &format!("/clicks/{click_id}"), None)
        .await;
    assert_eq!(view.status, 200, "{}", view.text());
    let view = view.json();
    assert_eq!(view["campaign_id"], C_PLAIN);
    assert_eq!(view["affiliate_id"], AFF);
    assert_eq!(view["creative_id"], 5);
    assert_eq!(view["sub_ids"], serde_json::json!(["abc", "def"]));
    assert_eq!(view["ip"], "127.0.0.1");
    server.stop().await;
}

#[tokio::test]
async fn https_public_urls_make_the_cookie_cross_site() {
    let mut config = config();
    config.server.public_url = "https://track.example".into();
    let server = TestServer::start_with(config).await;
    let reply = server
        .get(&format!("/click.track?CID={C_PLAIN}&AFID={AFF}"))
        .await;
    assert_eq!(reply.status, 302);
    let cookie = reply.header("set-cookie").expect("Set-Cookie");
    assert!(
        cookie.ends_with("; Path=/; HttpOnly; SameSite=None; Secure"),
        "{cookie}"
    );
    server.stop().await;
}

#[tokio::test]
async fn flags_c_r_and_t() {
    let server = TestServer::start().await;
    let link = format!("/click.track?CID={C_PLAIN}&AFID={AFF}");

    // C=0: no Set-Cookie header at all, still tracked.
    let reply = server.get(&format!("{link}&C=0")).await;
    assert_eq!(reply.status, 302);
    assert!(reply.headers_named("set-cookie").is_empty());

    // R=0: 200 text/plain whose body is the click ID.
    let reply = server.get(&format!("{link}&r=0")).await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let click_id = reply.text();
    assert_eq!(
        server
            .admin("GET", &format!("/clicks/{click_id}"), None)
            .await
            .status,
        200
    );

    // T=0: redirect only, nothing recorded, nothing counted, no click ID and no cookie.
    let before = clicks_today(&server).await;
    let reply = server.get(&format!("{link}&t=0")).await;
    assert_eq!(reply.status, 302);
    assert!(reply.header("location").unwrap().starts_with(LANDING));
    assert!(reply.headers_named("set-cookie").is_empty());
    assert_eq!(clicks_today(&server).await, before);

    // Any value other than 0 leaves the flag on.
    let reply = server.get(&format!("{link}&C=1&R=yes&T=")).await;
    assert_eq!(reply.status, 302);
    assert_eq!(reply.headers_named("set-cookie").len(), 1);
    server.stop().await;
}

async fn clicks_today(server: &TestServer) -> u64 {
    let report = server.admin("GET", "/report?group_by=", None).await;
    assert_eq!(report.status, 200, "{}", report.text());
    report.json()["totals"]["clicks"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn aliases_and_case_reach_the_same_fields() {
    let server = TestServer::start().await;
    let cases = [
        format!("cid={C_PLAIN}&afid={AFF}&sid1=x&sub2=y&adid=3"),
        format!("offer_id={C_PLAIN}&aff_id={AFF}&aff_sub=x&AFF_SUB2=y&creative_id=3"),
        format!("OFFER_ID={C_PLAIN}&Aff_Id={AFF}&SUB1=x&Sid2=y&CREATIVE_ID=3"),
        format!("Cid={C_PLAIN}&AfId={AFF}&SID=x,y&AdId=3"),
    ];
    for query in cases {
        let click_id = server.click_id(&query, &[]).await;
        let view = server
            .admin("GET", &format!("/clicks/{click_id}"), None)
            .await
            .json();
        assert_eq!(view["campaign_id"], C_PLAIN, "{query}");
        assert_eq!(view["affiliate_id"], AFF, "{query}");
        assert_eq!(view["creative_id"], 3, "{query}");
        assert_eq!(view["sub_ids"], serde_json::json!(["x", "y"]), "{query}");
    }
    server.stop().await;
}

#[tokio::test]
async fn extras_are_kept_and_propagated_only_when_the_campaign_says_so() {
    let server = TestServer::start().await;
    let click_id = server
        .click_id(
            &format!("CID={C_PLAIN}&AFID={AFF}&utm_source=news&x=1"),
            &[],
        )
        .await;
    let view = server
        .admin("GET", &format!("/clicks/{click_id}"), None)
        .await
        .json();
    assert_eq!(
        view["extras"],
        serde_json::json!([["utm_source", "news"], ["x", "1"]])
    );

    let reply = server
        .get(&format!(
            "/click.track?CID={C_EXTRAS}&AFID={AFF}&utm_source=a%26b%3Dc"
        ))
        .await;
    assert_eq!(reply.status, 302);
    let location = reply.header("location").unwrap();
    assert_eq!(
        query_value(location, "u").as_deref(),
        Some("a&b=c"),
        "{location}"
    );

    let reply = server
        .get(&format!(
            "/click.track?CID={C_PLAIN}&AFID={AFF}&utm_source=zzz"
        ))
        .await;
    assert!(!reply.header("location").unwrap().contains("zzz"));
    server.stop().await;
}

#[tokio::test]
async fn broken_links_go_to_the_fallback_or_404() {
    let cases = [
        format!("CID=999&AFID={AFF}"),
        format!("CID={C_PAUSED}&AFID={AFF}"),
        format!("CID={C_PLAIN}&AFID=999"),
        format!("CID={C_PLAIN}&AFID={AFF_BLOCKED}"),
        format!("CID=abc&AFID={AFF}"),
        format!("CID={C_PLAIN}"),
        format!("AFID={AFF}"),
        "CID=-1&AFID=7".to_string(),
        String::new(),
    ];
    let server = TestServer::start().await;
    for query in &cases {
        let reply = server.get(&format!("/click.track?{query}")).await;
        assert_eq!(reply.status, 404, "{query}");
        assert!(reply
            .header("content-type")
            .unwrap()
            .starts_with("text/plain"));
        assert!(!reply.text().is_empty(), "{query}: a reason");
        assert!(reply.headers_named("set-cookie").is_empty(), "{query}");
    }
    let metrics = server.get("/metrics").await.text();
    assert!(
        metrics.contains("clicktrail_click_rejections_total"),
        "{metrics}"
    );
    server.stop().await;

    let mut config = config();
    config.server.fallback_url = "https://network.example/oops?x=1".into();
    let server = TestServer::start_with(config).await;
    for query in &cases {
        let reply = server.get(&format!("/click.track?{query}")).await;
        assert_eq!(reply.status, 302, "{query}");
        assert_eq!(
            reply.header("location"),
            Some("https://network.example/oops?x=1"),
            "{query}"
        );
        assert!(reply.headers_named("set-cookie").is_empty(), "{query}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_target_never_comes_from_the_request() {
    let server = TestServer::start().await;
    let attempts = [
        "&url=https://evil.example/",
        "&redirect=https%3A%2F%2Fevil.example",
        "&SID=%2F%2Fevil.example",
        "&SID=x%26ref%3Devil&SID2=@evil.example",
        "&SID=%0d%0aLocation:%20https://evil.example",
    ];
    for extra in attempts {
        let reply = server
            .request(
                "GET",
                &format!("/click.track?CID={C_PLAIN}&AFID={AFF}{extra}"),
                &[
                    ("Host", "evil.example"),
                    ("X-Forwarded-Host", "evil.example"),
                ],
                b"",
            )
            .await;
        assert_eq!(reply.status, 302, "{extra}");
        let location = reply.header("location").unwrap();
        assert!(
            location.starts_with(&format!("{LANDING}?ref=")),
            "{extra}: {location}"
        );
        assert!(
            !location.contains("evil.example/") || location.contains("%2F"),
            "{location}"
        );
        assert_eq!(reply.headers_named("location").len(), 1);
        // The sub ID stays inside its own parameter, encoded.
        assert!(location.matches("ref=").count() == 1, "{location}");
        assert!(!location.contains(['\r', '\n', ' ']), "{location}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_client_ip_is_the_peer_unless_a_trusted_proxy_forwarded_it() {
    // Not trusted: X-Forwarded-For is ignored.
    let server = TestServer::start().await;
    let click_id = server
        .click_id(
            &format!("CID={C_PLAIN}&AFID={AFF}"),
            &[("X-Forwarded-For", "198.51.100.7")],
        )
        .await;
    let view = server
        .admin("GET", &format!("/clicks/{click_id}"), None)
        .await
        .json();
    assert_eq!(view["ip"], "127.0.0.1");
    server.stop().await;

    // Trusted: the right-most entry not itself a trusted proxy.
    let mut config = config();
    config.server.trusted_proxies = vec![
        "127.0.0.0/8".parse().unwrap(),
        "10.0.0.0/8".parse().unwrap(),
    ];
    let server = TestServer::start_with(config).await;
    let cases = [
        ("198.51.100.7", "198.51.100.7"),
        ("6.6.6.6, 198.51.100.7", "198.51.100.7"),
        ("6.6.6.6, 198.51.100.7, 10.1.2.3", "198.51.100.7"),
    ];
    for (xff, want) in cases {
        let click_id = server
            .click_id(
                &format!("CID={C_PLAIN}&AFID={AFF}"),
                &[("X-Forwarded-For", xff)],
            )
            .await;
        let view = server
            .admin("GET", &format!("/clicks/{click_id}"), None)
            .await
            .json();
        assert_eq!(view["ip"], want, "{xff}");
    }
    server.stop().await;
}

#[tokio::test]
async fn uniqueness_follows_the_cookie_and_the_fingerprint() {
    let server = TestServer::start().await;
    let link = format!("CID={C_PLAIN}&AFID={AFF}");
    let ua = [("User-Agent", "agent-one")];
    let first = server.click_id(&link, &ua).await;
    let cookie = format!("ct_{C_PLAIN}={first}");
    let again = server
        .click_id(
            &link,
            &[("User-Agent", "agent-two"), ("Cookie", cookie.as_str())],
        )
        .await;
    let same_fingerprint = server.click_id(&link, &ua).await;
    let other = server
        .click_id(&link, &[("User-Agent", "agent-three")])
        .await;
    for (id, unique) in [
        (&first, true),
        (&again, false),
        (&same_fingerprint, false),
        (&other, true),
    ] {
        let view = server
            .admin("GET", &format!("/clicks/{id}"), None)
            .await
            .json();
        assert_eq!(view["unique"], unique, "{id}");
    }
    server.stop().await;
}
