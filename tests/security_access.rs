//! Nobody in where they don't belong (issue 7): every admin endpoint and method refuses a
//! missing or wrong token; server posts refuse wrong tokens and disallowed IPs, also when a
//! client forges `X-Forwarded-For`; a ClickID is redeemed once even under concurrent posts;
//! forged and truncated click IDs are refused without growing a shard's memory.

#[path = "support/ops.rs"]
mod ops;
mod support;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::*;

/// Every admin route with a method it serves, and a body where it needs one. Paths with an
/// ID use ones that exist, so a token bug could not hide behind a 404.
fn admin_routes(click_id: &str, conversion_id: &str) -> Vec<(&'static str, String, &'static str)> {
    let campaign = r#"{"id":1,"name":"x","landing_url":"https://x.example/"}"#;
    vec![
        ("GET", "/api/v1/campaigns".into(), ""),
        ("POST", "/api/v1/campaigns".into(), campaign),
        ("GET", "/api/v1/campaigns/1".into(), ""),
        ("PUT", "/api/v1/campaigns/1".into(), campaign),
        ("DELETE", "/api/v1/campaigns/1".into(), ""),
        ("GET", "/api/v1/affiliates".into(), ""),
        (
            "POST",
            "/api/v1/affiliates".into(),
            r#"{"id":70,"name":"x"}"#,
        ),
        ("GET", "/api/v1/affiliates/7".into(), ""),
        (
            "PUT",
            "/api/v1/affiliates/7".into(),
            r#"{"id":7,"name":"x"}"#,
        ),
        ("DELETE", "/api/v1/affiliates/7".into(), ""),
        ("GET", "/api/v1/webhooks".into(), ""),
        (
            "POST",
            "/api/v1/webhooks".into(),
            r#"{"id":1,"url":"https://hook.example/"}"#,
        ),
        ("GET", "/api/v1/webhooks/1".into(), ""),
        ("DELETE", "/api/v1/webhooks/1".into(), ""),
        ("GET", format!("/api/v1/clicks/{click_id}"), ""),
        ("GET", "/api/v1/conversions".into(), ""),
        (
            "POST",
            format!("/api/v1/conversions/{conversion_id}/status"),
            r#"{"status":"rejected"}"#,
        ),
        ("GET", "/api/v1/deliveries?state=pending".into(), ""),
        ("POST", "/api/v1/deliveries/x/replay".into(), ""),
        ("GET", "/api/v1/report".into(), ""),
        ("GET", "/api/v1/report?format=csv".into(), ""),
        ("GET", "/api/v1/nonexistent".into(), ""),
    ]
}

#[tokio::test]
async fn every_admin_endpoint_refuses_a_missing_or_wrong_token() {
    let server = TestServer::start().await;
    let click_id = server
        .click_id(&format!("CID={C_PLAIN}&AFID={AFF}"), &[])
        .await;
    let conversion = server.s2s(&format!("ClickID={click_id}")).await;
    assert_eq!(conversion.status, 200);
    let conversion_id = conversion.json()["conversion_id"]
        .as_str()
        .expect("id")
        .to_string();
    let wrong: [(&str, &[(&str, &str)]); 8] = [
        ("no header", &[]),
        ("wrong token", &[("Authorization", "Bearer wrong")]),
        ("empty token", &[("Authorization", "Bearer ")]),
        ("scheme only", &[("Authorization", "Bearer")]),
        (
            "basic auth",
            &[("Authorization", "Basic dGVzdC1hZG1pbi10b2tlbg==")],
        ),
        ("prefix", &[("Authorization", "Bearer test-admin-toke")]),
        ("token as a query", &[("X-Token", ADMIN_TOKEN)]),
        (
            "postback token",
            &[("Authorization", "Bearer s3cret-token")],
        ),
    ];
    for (method, path, body) in admin_routes(&click_id, &conversion_id) {
        for (what, headers) in &wrong {
            let mut headers = headers.to_vec();
            if !body.is_empty() {
                headers.push(("Content-Type", "application/json"));
            }
            let reply = server
                .request(method, &path, &headers, body.as_bytes())
                .await;
            assert_eq!(
                reply.status,
                401,
                "{method} {path} with {what}: {}",
                reply.text()
            );
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Bearer"),
                "{method} {path} with {what}"
            );
        }
        // Token in the query string is not a credential either.
        let sep = if path.contains('?') { '&' } else { '?' };
        let reply = server
            .request(
                method,
                &format!("{path}{sep}token={ADMIN_TOKEN}"),
                &[],
                body.as_bytes(),
            )
            .await;
        assert_eq!(reply.status, 401, "{method} {path} with ?token=");
    }
    // Nothing changed: the refused writes did not happen.
    let campaign = server
        .admin("GET", &format!("/campaigns/{C_PLAIN}"), None)
        .await;
    assert_eq!(campaign.status, 200);
    assert_eq!(campaign.json()["name"], format!("campaign {C_PLAIN}"));
    let view = server
        .admin("GET", &format!("/clicks/{click_id}"), None)
        .await;
    assert_eq!(view.json()["conversions"][0]["status"], "approved");
    assert_eq!(server.admin("GET", "/affiliates/7", None).await.status, 200);
    server.stop().await;
}

type Headers<'a> = Vec<(&'a str, &'a str)>;

#[tokio::test]
async fn server_posts_refuse_wrong_tokens_and_forged_forwarding() {
    // No trusted proxies: X-Forwarded-For from the client is ignored, so the client IP is
    // 127.0.0.1, outside the campaign's 10.9.0.0/16 allowlist.
    let server = TestServer::start().await;
    let click = server
        .click_id(&format!("CID={C_SECURED}&AFID={AFF}"), &[])
        .await;
    let bearer = format!("Bearer {POSTBACK_TOKEN}");
    let cases: Vec<(&str, String, Headers, u16)> = vec![
        ("no token", format!("ClickID={click}"), vec![], 401),
        (
            "wrong token",
            format!("ClickID={click}&token=nope"),
            vec![],
            401,
        ),
        (
            "token prefix",
            format!("ClickID={click}&token=s3cret"),
            vec![],
            401,
        ),
        (
            "admin token",
            format!("ClickID={click}&token={ADMIN_TOKEN}"),
            vec![],
            401,
        ),
        (
            "wrong bearer",
            format!("ClickID={click}"),
            vec![("Authorization", "Bearer nope")],
            401,
        ),
        (
            "AFID post without a token",
            format!("CID={C_SECURED}&AFID={AFF}"),
            vec![],
            401,
        ),
        (
            "right token, disallowed IP",
            format!("ClickID={click}&token={POSTBACK_TOKEN}"),
            vec![],
            403,
        ),
        (
            "right bearer, forged X-Forwarded-For",
            format!("ClickID={click}"),
            vec![
                ("Authorization", bearer.as_str()),
                ("X-Forwarded-For", "10.9.1.1"),
            ],
            403,
        ),
        (
            "forged X-Real-IP and Forwarded",
            format!("ClickID={click}&token={POSTBACK_TOKEN}"),
            vec![("X-Real-IP", "10.9.1.1"), ("Forwarded", "for=10.9.1.1")],
            403,
        ),
        (
            "AFID post, right token, disallowed IP",
            format!("CID={C_SECURED}&AFID={AFF}&token={POSTBACK_TOKEN}"),
            vec![],
            403,
        ),
    ];
    for (what, query, headers, status) in &cases {
        let reply = server
            .request(
                "GET",
                &format!("/pixel.track?type=s2s&{query}"),
                headers,
                b"",
            )
            .await;
        assert_eq!(reply.status, *status, "{what}: {}", reply.text());
    }
    // A form body with the wrong token is refused the same way.
    let reply = server
        .request(
            "POST",
            "/pixel.track",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            format!("type=s2s&ClickID={click}&token=nope").as_bytes(),
        )
        .await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    // None of them converted the click.
    let view = server.admin("GET", &format!("/clicks/{click}"), None).await;
    assert_eq!(view.json()["conversions"].as_array().map(Vec::len), Some(0));
    server.stop().await;
}

/// How many concurrent posts race for one click.
const RACERS: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_id_is_redeemed_once_under_concurrent_posts() {
    let server = TestServer::start().await;
    for round in 0..5 {
        let click = server
            .click_id(&format!("CID={C_PLAIN}&AFID={AFF}&SID=race{round}"), &[])
            .await;
        // Aliases of the ClickID field race too: they name the same click.
        let names = ["ClickID", "click_id", "transaction_id", "CLICKID"];
        let posts: Vec<_> = (0..RACERS)
            .map(|i| {
                let addr = server.addr;
                let target = format!("/pixel.track?type=s2s&{}={click}", names[i % names.len()]);
                tokio::spawn(async move { request(addr, "GET", &target, &[], b"").await })
            })
            .collect();
        let mut won = Vec::new();
        let mut duplicates = Vec::new();
        for post in posts {
            let reply = post.await.expect("post");
            match reply.status {
                200 => won.push(reply.json()["conversion_id"].clone()),
                409 => {
                    assert_eq!(reply.json()["status"], "duplicate");
                    duplicates.push(reply.json()["conversion_id"].clone());
                }
                other => panic!("round {round}: {other}: {}", reply.text()),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: exactly one 200: {won:?}");
        assert_eq!(duplicates.len(), RACERS - 1, "round {round}");
        assert!(
            duplicates.iter().all(|d| *d == won[0]),
            "round {round}: every 409 names the original conversion"
        );
        let view = server.admin("GET", &format!("/clicks/{click}"), None).await;
        let counted: Vec<_> = view.json()["conversions"]
            .as_array()
            .expect("conversions")
            .iter()
            .filter(|c| c["counted"] == true)
            .cloned()
            .collect();
        assert_eq!(counted.len(), 1, "round {round}: one counted conversion");
    }
    let report = server.admin("GET", "/report", None).await.json();
    assert_eq!(report["totals"]["conversions"], 5, "{report}");
    server.stop().await;
}

/// Forged IDs posted: enough that per-ID growth would show in the memory probe.
const FORGED: usize = 1500;

#[tokio::test]
async fn forged_and_truncated_click_ids_are_refused_without_growing_memory() {
    let seed = ops::seed("forged_and_truncated_click_ids_are_refused_without_growing_memory");
    let mut rng = StdRng::seed_from_u64(seed);
    let server = TestServer::start().await;
    let real = server
        .click_id(&format!("CID={C_PLAIN}&AFID={AFF}"), &[])
        .await;
    let (clicks_before, bytes_before) = server.engine.click_memory().await;
    let report_before = server.admin("GET", "/report", None).await.json()["totals"].clone();

    let alphabet: Vec<char> = ('a'..='z')
        .chain('A'..='Z')
        .chain('0'..='9')
        .chain(['-', '_'])
        .collect();
    // (An empty `ClickID=` is no click ID at all: an unattributed conversion, SPEC 2.3.)
    let mut forged: Vec<String> = vec![
        real[..real.len() - 1].to_string(),
        real[..real.len() / 2].to_string(),
        real[1..].to_string(),
        format!("{real}A"),
        format!("{real}{real}"),
        real.to_uppercase(),
        "0".repeat(real.len()),
        "_".repeat(real.len()),
        "%2e%2e%2f".to_string(),
        "..%2F..%2Fetc".to_string(),
    ];
    while forged.len() < FORGED {
        let len = rng.random_range(1..=40);
        let mut id: String = (0..len)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect();
        if rng.random_bool(0.5) {
            // One character off the real ID: the checksum-free worst case.
            id = real.clone();
            let at = rng.random_range(0..id.len());
            let c = alphabet[rng.random_range(0..alphabet.len())];
            id.replace_range(at..at + 1, &c.to_string());
            if id == real {
                continue;
            }
        }
        forged.push(id);
    }
    for id in &forged {
        let reply = server.s2s(&format!("ClickID={id}")).await;
        assert!(
            matches!(reply.status, 400 | 404),
            "forged {id:?}: {} {}",
            reply.status,
            reply.text()
        );
        let view = server.admin("GET", &format!("/clicks/{id}"), None).await;
        assert_eq!(view.status, 404, "forged {id:?} is no click");
    }
    // A forged cookie on a browser pixel: harmless. (On a campaign this visitor never
    // clicked, so the IP backup cannot match the real click instead.)
    for id in forged.iter().take(50) {
        let cookie = format!("ct_{C_MULTI}={id}");
        let pixel = server
            .request(
                "GET",
                &format!("/pixel.track?CID={C_MULTI}"),
                &[("Cookie", &cookie)],
                b"",
            )
            .await;
        assert!(pixel.is_gif());
    }
    let (clicks_after, bytes_after) = server.engine.click_memory().await;
    assert_eq!(clicks_after, clicks_before, "forged IDs created no clicks");
    assert_eq!(
        bytes_after, bytes_before,
        "forged IDs grew no shard's click memory"
    );
    let report_after = server.admin("GET", "/report", None).await.json()["totals"].clone();
    assert_eq!(
        report_after["clicks"], report_before["clicks"],
        "{report_after}"
    );
    assert_eq!(report_after["conversions"], report_before["conversions"]);
    // The real ID still converts.
    assert_eq!(server.s2s(&format!("ClickID={real}")).await.status, 200);
    server.stop().await;
}
