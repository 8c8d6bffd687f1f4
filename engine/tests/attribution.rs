//! Attribution and campaign switches (SPEC 2.1-2.3, section 9) at the engine boundary:
//! each case is a campaign tweak and a list of steps (clicks, time, conversions) with the
//! expected answers, run through one `check` helper on a real engine and real logs.

mod common;

use common::*;
use engine::*;
use std::collections::HashMap;

#[derive(Clone, Default)]
struct Conv {
    ty: PixelType,
    /// ClickID: a remembered click's ID.
    click: Option<&'static str>,
    /// ClickID given literally.
    raw_click: Option<&'static str>,
    /// A `ct_<CID>` cookie holding a remembered click's ID.
    cookie: Option<&'static str>,
    visitor: u8,
    cid: u32,
    afid: u32,
    event: &'static str,
    mref: Option<&'static str>,
    ap: Option<f64>,
    mp: Option<f64>,
    total: Option<f64>,
    currency: Option<&'static str>,
    status: ConversionStatus,
    token: Option<&'static str>,
    ip: Option<&'static str>,
    /// Remember the answered conversion ID under this name.
    name: Option<&'static str>,
}

#[derive(Clone, Default)]
struct Expect {
    status: Option<OutcomeStatus>,
    matched_by: Option<&'static str>,
    /// The remembered click the conversion must be attached to.
    on_click: Option<&'static str>,
    payout: Option<f64>,
    revenue: Option<f64>,
    currency: Option<&'static str>,
    /// The answered conversion ID must equal this remembered one (duplicates).
    same_as: Option<&'static str>,
    reason: Option<&'static str>,
    audit_contains: Option<&'static str>,
}

#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // test data, built once per step
enum Step {
    /// Click `name` by visitor `v` on (campaign, affiliate).
    Click(&'static str, u32, u32, u8),
    Advance(u64),
    Convert(Conv, Expect),
}

fn expect(status: OutcomeStatus) -> Expect {
    Expect {
        status: Some(status),
        ..Expect::default()
    }
}

fn by_click(name: &'static str) -> Conv {
    Conv {
        ty: PixelType::S2s,
        click: Some(name),
        ..Conv::default()
    }
}

fn browser(cid: u32, visitor: u8) -> Conv {
    Conv {
        ty: PixelType::Img,
        cid,
        visitor,
        ..Conv::default()
    }
}

fn afid_post(cid: u32, afid: u32) -> Conv {
    Conv {
        ty: PixelType::S2s,
        cid,
        afid,
        ..Conv::default()
    }
}

async fn check(name: &str, tweak: impl Fn(&mut Campaign), steps: Vec<Step>) {
    let h = Harness::new(3, |c| {
        for campaign in &mut c.campaigns {
            tweak(campaign);
        }
    });
    let e = h.engine();
    let mut clicks: HashMap<&str, String> = HashMap::new();
    let mut convs: HashMap<&str, String> = HashMap::new();
    for (i, step) in steps.into_iter().enumerate() {
        let at = format!("{name}: step {i}");
        match step {
            Step::Click(label, cid, afid, v) => {
                let id = click_id(e, click_request(cid, afid, v)).await;
                clicks.insert(label, id);
            }
            Step::Advance(ms) => h.clock.advance_ms(ms),
            Step::Convert(c, want) => {
                let mut req = conversion(c.ty);
                req.click_id = c
                    .click
                    .map(|l| clicks[l].clone())
                    .or(c.raw_click.map(String::from));
                if let Some(l) = c.cookie {
                    req.cookies.push((c.cid, clicks[l].clone()));
                }
                req.visitor = visitor(c.visitor);
                if let Some(ip) = c.ip {
                    req.visitor.ip = ip.parse().expect("ip");
                }
                req.source.campaign_id = c.cid;
                req.source.affiliate_id = c.afid;
                req.event = c.event.to_string();
                req.merchant_ref = c.mref.map(String::from);
                req.payout_override = c.ap;
                req.revenue_override = c.mp;
                req.total_sales = c.total;
                req.currency_override = c.currency.map(String::from);
                req.status = c.status;
                req.token = c.token.map(String::from);
                let out = e.convert(req).await;
                if let Some(s) = want.status {
                    assert_eq!(out.status, s, "{at}: status ({out:?})");
                }
                if let Some(r) = want.reason {
                    assert_eq!(out.reason.as_deref(), Some(r), "{at}: reason");
                }
                if let Some(p) = want.payout {
                    assert_eq!(out.payout, Some(p), "{at}: payout");
                }
                if let Some(r) = want.revenue {
                    assert_eq!(out.revenue, Some(r), "{at}: revenue");
                }
                if let Some(cur) = want.currency {
                    assert_eq!(out.currency.as_deref(), Some(cur), "{at}: currency");
                }
                if let Some(l) = want.same_as {
                    assert_eq!(
                        out.conversion_id.as_ref(),
                        Some(&convs[l]),
                        "{at}: original conversion"
                    );
                }
                if let Some(l) = want.on_click {
                    assert_eq!(
                        out.click_id.as_ref(),
                        Some(&clicks[l]),
                        "{at}: matched click"
                    );
                }
                if want.matched_by.is_some() || want.audit_contains.is_some() {
                    let id = out.conversion_id.clone().expect("recorded");
                    let page = e
                        .conversions(ConversionQuery {
                            limit: 1000,
                            ..ConversionQuery::default()
                        })
                        .await
                        .expect("conversions");
                    let view = page
                        .items
                        .iter()
                        .find(|v| v.conversion_id == id)
                        .unwrap_or_else(|| panic!("{at}: conversion {id} listed"));
                    if let Some(m) = want.matched_by {
                        assert_eq!(view.matched_by, m, "{at}: matched_by");
                    }
                    if let Some(a) = want.audit_contains {
                        assert!(
                            view.audit.iter().any(|line| line.contains(a)),
                            "{at}: audit {:?} lacks {a:?}",
                            view.audit
                        );
                    }
                }
                if let (Some(l), Some(id)) = (c.name, out.conversion_id) {
                    convs.insert(l, id);
                }
            }
        }
    }
}

fn no_tweak(_: &mut Campaign) {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_id_posts() {
    use OutcomeStatus::*;
    check(
        "click id converts with the campaign's payout",
        no_tweak,
        vec![
            Step::Click("a", 1, 7, 1),
            Step::Convert(
                by_click("a"),
                Expect {
                    status: Some(Approved),
                    matched_by: Some("click_id"),
                    on_click: Some("a"),
                    payout: Some(4.0),
                    revenue: Some(10.0),
                    audit_contains: Some("payout fixed by the campaign"),
                    ..Expect::default()
                },
            ),
        ],
    )
    .await;
    check(
        "unknown and malformed click IDs",
        no_tweak,
        vec![
            Step::Convert(
                Conv {
                    raw_click: Some("AAAAAAAAAAAAAAAAAAAAAA"),
                    ty: PixelType::S2s,
                    ..Conv::default()
                },
                expect(UnknownClick),
            ),
            Step::Convert(
                Conv {
                    raw_click: Some("not-a-click-id"),
                    ty: PixelType::S2s,
                    ..Conv::default()
                },
                expect(UnknownClick),
            ),
        ],
    )
    .await;
    check(
        "a click of another campaign is not this campaign's",
        no_tweak,
        vec![
            Step::Click("a", 1, 7, 1),
            Step::Convert(
                Conv {
                    cid: 2,
                    ..by_click("a")
                },
                expect(UnknownClick),
            ),
            Step::Convert(
                Conv {
                    cid: 1,
                    ..by_click("a")
                },
                expect(Approved),
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_life_edges() {
    use OutcomeStatus::*;
    let one_day = |c: &mut Campaign| c.cookie_life_days = 1;
    check(
        "conversion at exactly the end of cookie life counts",
        one_day,
        vec![
            Step::Click("a", 1, 7, 1),
            Step::Advance(DAY_MS),
            Step::Convert(by_click("a"), expect(Approved)),
        ],
    )
    .await;
    check(
        "one millisecond later the click is expired",
        one_day,
        vec![
            Step::Click("a", 1, 7, 1),
            Step::Advance(DAY_MS + 1),
            Step::Convert(by_click("a"), expect(Expired)),
        ],
    )
    .await;
    check(
        "an expired cookie falls through to the next rule",
        |c| {
            c.cookie_life_days = 1;
            c.ip_backup = false;
        },
        vec![
            Step::Click("a", 1, 7, 1),
            Step::Advance(DAY_MS + 1),
            Step::Convert(
                Conv {
                    cookie: Some("a"),
                    ..browser(1, 1)
                },
                Expect {
                    status: Some(Approved),
                    reason: Some("unattributed"),
                    matched_by: Some("unattributed"),
                    payout: Some(0.0),
                    audit_contains: Some("expired"),
                    ..Expect::default()
                },
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_rules_cookie_then_ip_backup() {
    use OutcomeStatus::*;
    check(
        "cookie match beats IP backup",
        no_tweak,
        vec![
            Step::Click("a", 1, 7, 1),
            Step::Click("b", 1, 8, 2),
            // Visitor 2's fingerprint, but visitor 1's cookie: the cookie wins.
            Step::Convert(
                Conv {
                    cookie: Some("a"),
                    ..browser(1, 2)
                },
                Expect {
                    status: Some(Approved),
                    matched_by: Some("cookie"),
                    on_click: Some("a"),
                    ..Expect::default()
                },
            ),
        ],
    )
    .await;
    check(
        "IP backup: same fingerprint, latest click wins",
        no_tweak,
        vec![
            Step::Click("first", 1, 7, 5),
            Step::Advance(1000),
            Step::Click("latest", 1, 8, 5),
            Step::Convert(
                browser(1, 5),
                Expect {
                    status: Some(Approved),
                    matched_by: Some("ip_backup"),
                    on_click: Some("latest"),
                    ..Expect::default()
                },
            ),
        ],
    )
    .await;
    check(
        "IP backup window: at 24 h it matches",
        no_tweak,
        vec![
            Step::Click("a", 1, 7, 5),
            Step::Advance(24 * HOUR_MS),
            Step::Convert(
                browser(1, 5),
                Expect {
                    matched_by: Some("ip_backup"),
                    ..expect(Approved)
                },
            ),
        ],
    )
    .await;
    check(
        "IP backup window: past it, unattributed",
        no_tweak,
        vec![
            Step::Click("a", 1, 7, 5),
            Step::Advance(24 * HOUR_MS + 1),
            Step::Convert(
                browser(1, 5),
                Expect {
                    reason: Some("unattributed"),
                    matched_by: Some("unattributed"),
                    ..expect(Approved)
                },
            ),
        ],
    )
    .await;
    check(
        "ip_backup off: no fingerprint match",
        |c| c.ip_backup = false,
        vec![
            Step::Click("a", 1, 7, 5),
            Step::Convert(
                browser(1, 5),
                Expect {
                    matched_by: Some("unattributed"),
                    ..expect(Approved)
                },
            ),
        ],
    )
    .await;
    check(
        "server posts never use cookies or fingerprints",
        no_tweak,
        vec![
            Step::Click("a", 1, 7, 5),
            Step::Convert(
                Conv {
                    ty: PixelType::S2s,
                    cookie: Some("a"),
                    ..browser(1, 5)
                },
                Expect {
                    matched_by: Some("unattributed"),
                    ..expect(Approved)
                },
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates() {
    use OutcomeStatus::*;
    check(
        "a click converts once per event",
        no_tweak,
        vec![
            Step::Click("a", 1, 7, 1),
            Step::Convert(
                Conv {
                    name: Some("first"),
                    ..by_click("a")
                },
                expect(Approved),
            ),
            Step::Convert(
                by_click("a"),
                Expect {
                    same_as: Some("first"),
                    ..expect(Duplicate)
                },
            ),
            Step::Convert(
                Conv {
                    event: "SALE",
                    ..by_click("a")
                },
                expect(Duplicate),
            ),
            Step::Convert(
                Conv {
                    event: "lead",
                    ..by_click("a")
                },
                expect(Approved),
            ),
        ],
    )
    .await;
    check(
        "multiple_conversions lets a click convert again",
        |c| c.multiple_conversions = true,
        vec![
            Step::Click("a", 1, 7, 1),
            Step::Convert(by_click("a"), expect(Approved)),
            Step::Convert(by_click("a"), expect(Approved)),
        ],
    )
    .await;
    check(
        "merchant reference dedupe, across affiliates (and so shards)",
        |c| c.dedupe_merchant_ref = true,
        vec![
            Step::Convert(afid_post(1, 7), expect(Invalid)),
            Step::Convert(
                Conv {
                    mref: Some("order-1"),
                    name: Some("o1"),
                    ..afid_post(1, 7)
                },
                expect(Approved),
            ),
            Step::Convert(
                Conv {
                    mref: Some("order-1"),
                    ..afid_post(1, 8)
                },
                Expect {
                    same_as: Some("o1"),
                    ..expect(Duplicate)
                },
            ),
            Step::Convert(
                Conv {
                    mref: Some("order-1"),
                    ..afid_post(2, 8)
                },
                expect(Approved),
            ),
            Step::Click("a", 1, 7, 1),
            Step::Convert(
                Conv {
                    mref: Some("order-1"),
                    ..by_click("a")
                },
                Expect {
                    same_as: Some("o1"),
                    ..expect(Duplicate)
                },
            ),
            Step::Advance(90 * DAY_MS + 1),
            Step::Convert(
                Conv {
                    mref: Some("order-1"),
                    ..afid_post(1, 7)
                },
                expect(Approved),
            ),
        ],
    )
    .await;
    check(
        "merchant reference ignored without dedupe_merchant_ref",
        no_tweak,
        vec![
            Step::Convert(
                Conv {
                    mref: Some("order-1"),
                    ..afid_post(1, 7)
                },
                expect(Approved),
            ),
            Step::Convert(
                Conv {
                    mref: Some("order-1"),
                    ..afid_post(1, 7)
                },
                expect(Approved),
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_rules() {
    use OutcomeStatus::*;
    check(
        "overrides ignored when not allowed",
        no_tweak,
        vec![Step::Convert(
            Conv {
                ap: Some(9.0),
                mp: Some(20.0),
                ..afid_post(1, 7)
            },
            Expect {
                payout: Some(4.0),
                revenue: Some(10.0),
                audit_contains: Some("AP ignored"),
                ..expect(Approved)
            },
        )],
    )
    .await;
    check(
        "overrides honoured when allowed",
        |c| c.allow_custom_params = true,
        vec![Step::Convert(
            Conv {
                ap: Some(9.0),
                mp: Some(20.0),
                ..afid_post(1, 7)
            },
            Expect {
                payout: Some(9.0),
                revenue: Some(20.0),
                audit_contains: Some("payout from the AP override"),
                ..expect(Approved)
            },
        )],
    )
    .await;
    check(
        "percent payout of TotalSales",
        |c| c.payout_percent = 10.0,
        vec![
            Step::Convert(
                Conv {
                    total: Some(25.0),
                    ..afid_post(1, 7)
                },
                Expect {
                    payout: Some(2.5),
                    revenue: Some(10.0),
                    ..expect(Approved)
                },
            ),
            Step::Convert(
                afid_post(1, 7),
                Expect {
                    payout: Some(0.0),
                    audit_contains: Some("absent"),
                    ..expect(Approved)
                },
            ),
        ],
    )
    .await;
    check(
        "bad amounts are invalid",
        no_tweak,
        vec![
            Step::Convert(
                Conv {
                    ap: Some(-1.0),
                    ..afid_post(1, 7)
                },
                Expect {
                    reason: Some("AP"),
                    ..expect(Invalid)
                },
            ),
            Step::Convert(
                Conv {
                    total: Some(f64::NAN),
                    ..afid_post(1, 7)
                },
                Expect {
                    reason: Some("TotalSales"),
                    ..expect(Invalid)
                },
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_afid_posts_and_auth() {
    use OutcomeStatus::*;
    check(
        "statuses are honoured",
        no_tweak,
        vec![
            Step::Convert(
                Conv {
                    status: ConversionStatus::Pending,
                    ..afid_post(1, 7)
                },
                expect(Pending),
            ),
            Step::Convert(
                Conv {
                    status: ConversionStatus::Rejected,
                    ..afid_post(1, 7)
                },
                expect(Rejected),
            ),
        ],
    )
    .await;
    check(
        "AFID posts refused when not allowed",
        |c| c.allow_afid_posts = false,
        vec![
            Step::Convert(afid_post(1, 7), expect(Forbidden)),
            Step::Convert(
                Conv {
                    afid: 99,
                    ..afid_post(2, 7)
                },
                expect(Forbidden),
            ),
        ],
    )
    .await;
    check(
        "AFID post for an unknown affiliate or campaign is invalid",
        no_tweak,
        vec![
            Step::Convert(
                afid_post(1, 99),
                Expect {
                    reason: Some("AFID"),
                    ..expect(Invalid)
                },
            ),
            Step::Convert(
                afid_post(99, 7),
                Expect {
                    reason: Some("CID"),
                    ..expect(Invalid)
                },
            ),
            Step::Convert(
                afid_post(1, 7),
                Expect {
                    matched_by: Some("afid"),
                    ..expect(Approved)
                },
            ),
        ],
    )
    .await;
    check(
        "postback token",
        |c| c.postback_token = "s3cret".into(),
        vec![
            Step::Click("a", 1, 7, 1),
            Step::Convert(by_click("a"), expect(Unauthorized)),
            Step::Convert(
                Conv {
                    token: Some("wrong!"),
                    ..by_click("a")
                },
                expect(Unauthorized),
            ),
            Step::Convert(
                Conv {
                    token: Some("s3cret"),
                    ..by_click("a")
                },
                expect(Approved),
            ),
            // Browser pixels need no token.
            Step::Convert(
                Conv {
                    ty: PixelType::Img,
                    event: "lead",
                    ..by_click("a")
                },
                expect(Approved),
            ),
            Step::Convert(afid_post(1, 7), expect(Unauthorized)),
        ],
    )
    .await;
    check(
        "postback IP allowlist",
        |c| c.postback_ips = vec!["10.0.0.0/8".parse().expect("cidr")],
        vec![
            Step::Convert(
                Conv {
                    ip: Some("192.168.1.1"),
                    ..afid_post(1, 7)
                },
                expect(Forbidden),
            ),
            Step::Convert(
                Conv {
                    ip: Some("10.1.2.3"),
                    ..afid_post(1, 7)
                },
                expect(Approved),
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_unique_rejected_untracked_and_landing() {
    let h = Harness::new(2, |c| {
        c.campaigns[1].status = CampaignStatus::Paused;
        c.campaigns[0].propagate_extras = true;
        c.affiliates[1].status = AffiliateStatus::Blocked;
    });
    let e = h.engine();
    // Rejections, in the order the server maps them to the fallback URL.
    for (cid, afid, want) in [
        (9, 7, Rejection::UnknownCampaign),
        (2, 7, Rejection::PausedCampaign),
        (1, 9, Rejection::UnknownAffiliate),
        (1, 8, Rejection::BlockedAffiliate),
    ] {
        assert_eq!(
            e.click(click_request(cid, afid, 1)).await,
            Err(want),
            "{cid}/{afid}"
        );
    }
    // Landing URL: macros substituted and encoded, extras appended when propagated.
    let mut req = click_request(1, 7, 1);
    req.source.sub_ids = vec!["a&b=c#d".into()];
    req.source.extras = vec![("utm_source".into(), "x y".into())];
    let ClickOutcome::Tracked {
        click_id,
        location,
        cookie_life_secs,
        unique,
    } = e.click(req).await.expect("tracked")
    else {
        panic!("not tracked")
    };
    assert_eq!(cookie_life_secs, 30 * 86_400);
    assert!(unique);
    assert_eq!(click_id.len(), 22);
    assert_eq!(
        location,
        format!("https://shop.example/?ref={click_id}&a=7&s=a%26b%3Dc%23d&utm_source=x%20y")
    );
    // Uniqueness: same fingerprint within the window, or the same cookie, is not unique.
    let unique_of = |out: ClickOutcome| match out {
        ClickOutcome::Tracked { unique, .. } => unique,
        other => panic!("not tracked: {other:?}"),
    };
    assert!(!unique_of(
        e.click(click_request(1, 7, 1)).await.expect("click")
    ));
    let mut other_visitor_same_cookie = click_request(1, 7, 2);
    other_visitor_same_cookie.cookie_click_id = Some(click_id.clone());
    assert!(!unique_of(
        e.click(other_visitor_same_cookie).await.expect("click")
    ));
    h.clock.advance_ms(24 * HOUR_MS);
    assert!(unique_of(
        e.click(click_request(1, 7, 1)).await.expect("click")
    ));
    // T=0: redirect only, nothing recorded.
    let mut untracked = click_request(1, 7, 3);
    untracked.track = false;
    assert!(matches!(
        e.click(untracked).await,
        Ok(ClickOutcome::Untracked {
            degraded: false,
            ..
        })
    ));
    let today = Day::from_unix_ms(h.clock.now_ms());
    let report = e
        .report(ReportQuery {
            from: Day(today.0 - 1),
            to: today,
            group_by: vec![],
        })
        .await
        .expect("report");
    let t = &report.totals;
    assert_eq!(
        (t["clicks"].as_u64(), t["unique_clicks"].as_u64()),
        (Some(4), Some(2))
    );
    assert_eq!(t["duplicate_clicks"].as_u64(), Some(2));
    // The click view shows what was recorded.
    let view = e.click_view(&click_id).await.expect("click view");
    assert_eq!(view.sub_ids, vec!["a&b=c#d".to_string()]);
    assert_eq!(view.ip, "203.0.113.1");
    assert!(e.click_view("AAAAAAAAAAAAAAAAAAAAAA").await.is_none());
    assert!(e.click_view("garbage").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impressions_and_report_counters() {
    let h = Harness::new(2, |_| {});
    let e = h.engine();
    let imp = |v: u8| ImpressionRequest {
        source: source(1, 7, "s1"),
        visitor: visitor(v),
    };
    for v in [1, 1, 2] {
        e.impression(imp(v)).await.expect("impression");
    }
    assert_eq!(
        e.impression(ImpressionRequest {
            source: source(9, 7, ""),
            visitor: visitor(1)
        })
        .await,
        Err(Rejection::UnknownCampaign)
    );
    let a = click_id(e, click_request(1, 7, 1)).await;
    let _b = click_id(e, click_request(1, 7, 2)).await;
    let mut c1 = conversion(PixelType::S2s);
    c1.click_id = Some(a.clone());
    assert_eq!(e.convert(c1.clone()).await.status, OutcomeStatus::Approved);
    // Duplicate: not counted.
    assert_eq!(e.convert(c1).await.status, OutcomeStatus::Duplicate);
    // Rejected and unattributed: not counted.
    let mut rejected = conversion(PixelType::S2s);
    rejected.source = source(1, 7, "s1");
    rejected.status = ConversionStatus::Rejected;
    e.convert(rejected).await;
    let mut unattributed = conversion(PixelType::Img);
    unattributed.source.campaign_id = 1;
    e.convert(unattributed).await;
    let today = Day::from_unix_ms(h.clock.now_ms());
    let report = e
        .report(ReportQuery {
            from: today,
            to: today,
            group_by: vec![
                GroupKey::Day,
                GroupKey::Campaign,
                GroupKey::Affiliate,
                GroupKey::Sid1,
            ],
        })
        .await
        .expect("report");
    let json = serde_json::to_value(&report).expect("json");
    let rows = json["rows"].as_array().expect("rows");
    let row = rows
        .iter()
        .find(|r| r["campaign_id"] == 1 && r["affiliate_id"] == 7 && r["sid1"] == "s1")
        .expect("row for campaign 1 / affiliate 7 / s1");
    assert_eq!(row["day"], today.to_string());
    for (field, want) in [
        ("impressions", 3.0),
        ("unique_impressions", 2.0),
        ("clicks", 2.0),
        ("unique_clicks", 2.0),
        ("conversions", 1.0),
        ("approved", 1.0),
        ("revenue", 10.0),
        ("payout", 4.0),
        ("profit", 6.0),
        ("cr", 0.5),
        ("epc", 2.0),
    ] {
        assert_eq!(row[field].as_f64(), Some(want), "{field}");
    }
    assert!(row.get("creative_id").is_none());
    // Admin status change moves the counters.
    let listed = e
        .conversions(ConversionQuery {
            status: Some(ConversionStatus::Approved),
            limit: 10,
            ..ConversionQuery::default()
        })
        .await
        .expect("conversions");
    let counted: Vec<_> = listed.items.iter().filter(|c| c.counted).collect();
    assert_eq!(counted.len(), 1);
    let view = e
        .set_conversion_status(&counted[0].conversion_id, ConversionStatus::Rejected)
        .await
        .expect("status change");
    assert_eq!(view.status, ConversionStatus::Rejected);
    let report = e
        .report(ReportQuery {
            from: today,
            to: today,
            group_by: vec![],
        })
        .await
        .expect("report");
    assert_eq!(report.totals["conversions"].as_u64(), Some(0));
    assert_eq!(report.totals["revenue"].as_f64(), Some(0.0));
    assert!(matches!(
        e.set_conversion_status("nope", ConversionStatus::Approved)
            .await,
        Err(AdminError::NotFound)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_id_is_redeemed_once_under_concurrent_posts() {
    let h = Harness::new(4, |_| {});
    let e = h.engine().clone();
    let click = click_id(&e, click_request(1, 7, 1)).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let e = e.clone();
        let mut req = conversion(PixelType::S2s);
        req.click_id = Some(click.clone());
        tasks.spawn(async move { e.convert(req).await });
    }
    let mut outcomes = Vec::new();
    while let Some(out) = tasks.join_next().await {
        outcomes.push(out.expect("task"));
    }
    let approved: Vec<_> = outcomes
        .iter()
        .filter(|o| o.status == OutcomeStatus::Approved)
        .collect();
    assert_eq!(approved.len(), 1);
    let original = approved[0].conversion_id.clone();
    assert!(outcomes
        .iter()
        .filter(|o| o.status != OutcomeStatus::Approved)
        .all(|o| o.status == OutcomeStatus::Duplicate && o.conversion_id == original));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_reference_is_counted_once_under_concurrent_posts_across_shards() {
    let h = Harness::new(4, |c| c.campaigns[0].dedupe_merchant_ref = true);
    let e = h.engine().clone();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32u32 {
        let e = e.clone();
        let mut req = conversion(PixelType::S2s);
        // Different affiliates route to different shards.
        req.source = source(1, if i % 2 == 0 { 7 } else { 8 }, "");
        req.merchant_ref = Some("order-42".into());
        tasks.spawn(async move { e.convert(req).await.status });
    }
    let mut approved = 0;
    while let Some(status) = tasks.join_next().await {
        match status.expect("task") {
            OutcomeStatus::Approved => approved += 1,
            OutcomeStatus::Duplicate => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(approved, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_windows_and_currency() {
    use OutcomeStatus::*;
    check(
        "a custom backup window",
        |c| c.backup_window_hours = 2,
        vec![
            Step::Click("a", 1, 7, 5),
            Step::Advance(2 * HOUR_MS),
            Step::Convert(
                browser(1, 5),
                Expect {
                    matched_by: Some("ip_backup"),
                    ..expect(Approved)
                },
            ),
            Step::Click("b", 2, 7, 6),
            Step::Advance(2 * HOUR_MS + 1),
            Step::Convert(
                browser(2, 6),
                Expect {
                    matched_by: Some("unattributed"),
                    ..expect(Approved)
                },
            ),
        ],
    )
    .await;
    check(
        "currency override only when custom parameters are allowed",
        |c| {
            c.allow_custom_params = c.id == 2;
            c.currency = "GBP".into();
        },
        vec![
            Step::Convert(
                Conv {
                    currency: Some("eur"),
                    ..afid_post(1, 7)
                },
                Expect {
                    currency: Some("GBP"),
                    audit_contains: Some("Currency ignored"),
                    ..expect(Approved)
                },
            ),
            Step::Convert(
                Conv {
                    currency: Some("eur"),
                    ..afid_post(2, 7)
                },
                Expect {
                    currency: Some("EUR"),
                    ..expect(Approved)
                },
            ),
            Step::Convert(
                Conv {
                    currency: Some("euro"),
                    ..afid_post(2, 7)
                },
                Expect {
                    reason: Some("Currency"),
                    ..expect(Invalid)
                },
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_unique_window_and_extras_not_propagated() {
    let h = Harness::new(2, |c| c.campaigns[0].unique_window_hours = 1);
    let e = h.engine();
    let unique_of = |out: ClickOutcome| match out {
        ClickOutcome::Tracked { unique, .. } => unique,
        other => panic!("not tracked: {other:?}"),
    };
    let mut req = click_request(1, 7, 1);
    req.source.extras = vec![("utm".into(), "x".into())];
    let out = e.click(req.clone()).await.expect("click");
    if let ClickOutcome::Tracked { location, .. } = &out {
        assert!(
            !location.contains("utm"),
            "extras stay out without propagate_extras: {location}"
        );
    }
    assert!(unique_of(out));
    h.clock.advance_ms(HOUR_MS - 1);
    assert!(!unique_of(e.click(req.clone()).await.expect("click")));
    h.clock.advance_ms(HOUR_MS);
    assert!(unique_of(e.click(req).await.expect("click")));
}

/// The audit trail of a conversion, line for line as `GET /clicks/{id}` shows it: the
/// texts are stored compactly (fixed phrases, the match line rebuilt from the click ID),
/// so they must read exactly as written, live, after a status change and after a restart
/// (replayed from the log). `{click}` in an expected line stands for the click's ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_trails_read_the_same_live_and_after_a_restart() {
    let mut h = Harness::new(2, |c| {
        c.campaigns[1].allow_custom_params = true;
    });
    type Tweak = fn(&mut ConversionRequest);
    let cases: [(&str, u32, Tweak, &[&str]); 4] = [
        (
            "campaign money",
            1,
            |_| {},
            &[
                "matched by click_id to click {click}",
                "revenue fixed by the campaign",
                "payout fixed by the campaign",
            ],
        ),
        (
            "overrides refused",
            1,
            |r| {
                r.payout_override = Some(1.0);
                r.revenue_override = Some(2.0);
                r.currency_override = Some("eur".into());
            },
            &[
                "matched by click_id to click {click}",
                "mp ignored: the campaign does not allow custom parameters",
                "revenue fixed by the campaign",
                "AP ignored: the campaign does not allow custom parameters",
                "payout fixed by the campaign",
                "Currency ignored: the campaign does not allow custom parameters",
            ],
        ),
        (
            "overrides taken",
            2,
            |r| {
                r.payout_override = Some(1.0);
                r.revenue_override = Some(2.0);
                r.currency_override = Some("eur".into());
            },
            &[
                "matched by click_id to click {click}",
                "revenue from the mp override",
                "payout from the AP override",
                "currency from the Currency override",
            ],
        ),
        (
            "a long event and merchant reference",
            1,
            |r| {
                r.event = "an-event-name-longer-than-twenty-two-bytes".into();
                r.merchant_ref = Some("order-0123456789-0123456789".into());
            },
            &[
                "matched by click_id to click {click}",
                "revenue fixed by the campaign",
                "payout fixed by the campaign",
            ],
        ),
    ];
    let mut clicks = Vec::new();
    let mut want = Vec::new();
    for (i, (name, cid, tweak, lines)) in cases.iter().enumerate() {
        let click = click_id(h.engine(), click_request(*cid, 7, i as u8)).await;
        let mut req = conversion(PixelType::S2s);
        req.click_id = Some(click.clone());
        tweak(&mut req);
        let out = h.engine().convert(req).await;
        assert_eq!(out.status, OutcomeStatus::Approved, "{name}: {out:?}");
        let mut lines: Vec<String> = lines.iter().map(|l| l.replace("{click}", &click)).collect();
        if i == 0 {
            // A status change appends its own line.
            let id = out.conversion_id.expect("recorded");
            let view = h
                .engine()
                .set_conversion_status(&id, ConversionStatus::Rejected)
                .await
                .expect("status changed");
            let last = view.audit.last().expect("a line");
            assert!(
                last.ends_with("status changed from approved to rejected by an admin"),
                "{name}: {last:?}"
            );
            lines.push(last.clone());
        }
        clicks.push(click);
        want.push((name, lines));
    }
    let views = |e: &Engine| {
        let (e, clicks) = (e.clone(), clicks.clone());
        async move {
            let mut out = Vec::new();
            for click in &clicks {
                let view = e.click_view(click).await.expect("click view");
                out.push(view.conversions[0].clone());
            }
            out
        }
    };
    let live = views(h.engine()).await;
    for ((name, lines), view) in want.iter().zip(&live) {
        assert_eq!(&view.audit, lines, "{name}: live");
    }
    assert_eq!(
        (live[3].event.as_str(), live[3].merchant_ref.as_deref()),
        (
            "an-event-name-longer-than-twenty-two-bytes",
            Some("order-0123456789-0123456789")
        )
    );
    assert_eq!(live[2].currency, "EUR");
    h.restart().await;
    let replayed = views(h.engine()).await;
    for ((name, lines), view) in want.iter().zip(&replayed) {
        assert_eq!(&view.audit, lines, "{name}: after a restart");
    }
    assert_eq!(
        serde_json::to_value(&live).expect("json"),
        serde_json::to_value(&replayed).expect("json"),
        "every field after a restart"
    );
}
