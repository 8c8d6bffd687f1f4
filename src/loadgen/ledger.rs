//! What the load generator sent, and so what clicktrail must hold afterwards: one entry per
//! tracked click with the conversion it should carry, and the report counters. The
//! judgements here are pure functions of what was sent and what the server shows, so they
//! are tested without a server.

use super::plan::Method;
use serde_json::Value;
use std::collections::BTreeMap;

/// Failure descriptions kept for the final report; the rest are only counted, so a broken
/// server cannot make the load generator's memory grow without bound.
pub const MAX_FAILURE_SAMPLES: usize = 20;

/// The campaign settings that decide what a conversion should become (SPEC 2.3), read
/// from the admin API (or assumed to be the defaults without a token).
#[derive(Clone, Debug, PartialEq)]
pub struct CampaignFacts {
    pub ip_backup: bool,
    pub allow_afid_posts: bool,
    pub multiple_conversions: bool,
    /// Sent as `token` on server posts when the campaign requires one.
    pub postback_token: String,
    /// Per conversion; `None` when unknown (no admin token, or a percent payout).
    pub revenue: Option<f64>,
    pub payout: Option<f64>,
}

impl Default for CampaignFacts {
    fn default() -> Self {
        Self {
            ip_backup: true,
            allow_afid_posts: true,
            multiple_conversions: false,
            postback_token: String::new(),
            revenue: None,
            payout: None,
        }
    }
}

impl CampaignFacts {
    /// Reads a campaign as the admin API shows it (SPEC 9 field names).
    pub fn from_json(campaign: &Value) -> Self {
        let defaults = Self::default();
        let flag = |name: &str, default: bool| {
            campaign
                .get(name)
                .and_then(Value::as_bool)
                .unwrap_or(default)
        };
        let percent = campaign
            .get("payout_percent")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        Self {
            ip_backup: flag("ip_backup", defaults.ip_backup),
            allow_afid_posts: flag("allow_afid_posts", defaults.allow_afid_posts),
            multiple_conversions: flag("multiple_conversions", defaults.multiple_conversions),
            postback_token: campaign
                .get("postback_token")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            revenue: campaign.get("revenue").and_then(Value::as_f64),
            // A percent payout depends on TotalSales, which the load generator does not send.
            payout: if percent > 0.0 {
                None
            } else {
                campaign.get("payout").and_then(Value::as_f64)
            },
        }
    }

    /// How many counted conversions `sent` sendings of one conversion by `method` make.
    pub fn counted(&self, method: Method, sent: u32) -> u32 {
        let attributable = match method {
            Method::IpBackup => self.ip_backup,
            Method::Afid => self.allow_afid_posts,
            Method::Cookie | Method::ClickId => true,
        };
        match (attributable, self.multiple_conversions) {
            (false, _) => 0,
            (true, true) => sent,
            (true, false) => sent.min(1),
        }
    }
}

/// A conversion sent for a click, and what it must have become.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpectedConversion {
    pub method: Method,
    /// From the server post's answer; browser pixels answer a gif, so `None` for them.
    pub conversion_id: Option<String>,
    /// Times it was sent (2 with a duplicate).
    pub sent: u32,
    /// Counted conversions the click must show.
    pub counted: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SentClick {
    pub click_id: String,
    /// The address sent as X-Forwarded-For: the click must record it (SPEC 2.1).
    pub forwarded_ip: Option<String>,
    /// Not the visitor's latest click when it converted: it must carry no conversion.
    pub conversion: Option<ExpectedConversion>,
}

/// The report counters for one campaign and affiliate (SPEC 3 names).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    pub impressions: u64,
    pub unique_impressions: u64,
    pub clicks: u64,
    pub unique_clicks: u64,
    pub conversions: u64,
    pub approved: u64,
    pub revenue: f64,
    pub payout: f64,
}

impl Counters {
    /// The row of `report` (`group_by=campaign,affiliate`) for this pair; zeros when the
    /// report has no such row yet.
    pub fn from_report(report: &Value, campaign_id: u32, affiliate_id: u32) -> Self {
        let matches = |row: &&Value, key: &str, want: u32| {
            row.get(key).is_some_and(|v| {
                v.as_u64() == Some(u64::from(want)) || v.as_str() == Some(&want.to_string())
            })
        };
        let Some(row) = report
            .get("rows")
            .and_then(Value::as_array)
            .and_then(|rows| {
                rows.iter().find(|row| {
                    matches(row, "campaign_id", campaign_id)
                        && matches(row, "affiliate_id", affiliate_id)
                })
            })
        else {
            return Self::default();
        };
        let count = |name: &str| row.get(name).and_then(Value::as_u64).unwrap_or(0);
        let money = |name: &str| row.get(name).and_then(Value::as_f64).unwrap_or(0.0);
        Self {
            impressions: count("impressions"),
            unique_impressions: count("unique_impressions"),
            clicks: count("clicks"),
            unique_clicks: count("unique_clicks"),
            conversions: count("conversions"),
            approved: count("approved"),
            revenue: money("revenue"),
            payout: money("payout"),
        }
    }

    /// `self - before`, counter by counter.
    pub fn since(&self, before: &Counters) -> Counters {
        Counters {
            impressions: self.impressions.saturating_sub(before.impressions),
            unique_impressions: self
                .unique_impressions
                .saturating_sub(before.unique_impressions),
            clicks: self.clicks.saturating_sub(before.clicks),
            unique_clicks: self.unique_clicks.saturating_sub(before.unique_clicks),
            conversions: self.conversions.saturating_sub(before.conversions),
            approved: self.approved.saturating_sub(before.approved),
            revenue: self.revenue - before.revenue,
            payout: self.payout - before.payout,
        }
    }
}

/// One counter that differs: (name, expected, got).
pub type Mismatch = (&'static str, String, String);

/// Compares the counters the server reports (`got`, a delta over the run) with the ones
/// expected from what was sent; money only when the campaign's prices are known.
pub fn compare_counters(
    expected: &Counters,
    got: &Counters,
    facts: &CampaignFacts,
) -> Vec<Mismatch> {
    let mut mismatches = Vec::new();
    let counts = [
        ("impressions", expected.impressions, got.impressions),
        (
            "unique_impressions",
            expected.unique_impressions,
            got.unique_impressions,
        ),
        ("clicks", expected.clicks, got.clicks),
        ("unique_clicks", expected.unique_clicks, got.unique_clicks),
        ("conversions", expected.conversions, got.conversions),
        ("approved", expected.approved, got.approved),
    ];
    for (name, want, have) in counts {
        if want != have {
            mismatches.push((name, want.to_string(), have.to_string()));
        }
    }
    // Sums of f64 prices: allow rounding of a cent per million conversions.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * (1.0 + a.abs().max(b.abs()));
    if let Some(revenue) = facts.revenue {
        let want = revenue * expected.conversions as f64;
        if !close(want, got.revenue) {
            mismatches.push((
                "revenue",
                format!("{want:.2}"),
                format!("{:.2}", got.revenue),
            ));
        }
    }
    if let Some(payout) = facts.payout {
        let want = payout * expected.conversions as f64;
        if !close(want, got.payout) {
            mismatches.push(("payout", format!("{want:.2}"), format!("{:.2}", got.payout)));
        }
    }
    mismatches
}

/// What a click's view says about the conversion expected on it.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Exactly the expected counted conversions, matched the expected way.
    Correct,
    /// The expected conversion is not counted on this click (lost, or given to another).
    Missing,
    /// Counted, but matched another way than the one that should have matched.
    WrongMethod { got: String },
    /// A counted conversion that is not the one the server post was answered with.
    WrongConversion { got: String },
    /// More counted conversions than sent conversions allow: a duplicate was counted.
    DuplicateCounted { counted: u32 },
    /// Counted conversions on a click that should have none (taken from another click).
    Unexpected { counted: u32 },
    /// The click recorded another client IP than the one a trusted proxy forwarded.
    WrongIp { got: String },
    /// The view is not the shape SPEC 3 describes.
    Malformed(String),
}

/// Judges `view` (the admin API's click, with its conversions) against what was sent.
pub fn judge(click: &SentClick, view: &Value) -> Verdict {
    if let Some(sent_ip) = &click.forwarded_ip {
        let got = view.get("ip").and_then(Value::as_str).unwrap_or_default();
        if got != sent_ip {
            return Verdict::WrongIp {
                got: got.to_string(),
            };
        }
    }
    judge_conversions(click.conversion.as_ref(), view)
}

fn judge_conversions(expected: Option<&ExpectedConversion>, view: &Value) -> Verdict {
    let Some(conversions) = view.get("conversions").and_then(Value::as_array) else {
        return Verdict::Malformed("no `conversions` array".to_string());
    };
    let mut counted = Vec::new();
    for conversion in conversions {
        match conversion.get("counted").and_then(Value::as_bool) {
            Some(true) => counted.push(conversion),
            Some(false) => {}
            None => return Verdict::Malformed("a conversion without `counted`".to_string()),
        }
    }
    let n = counted.len() as u32;
    let want = expected.map_or(0, |e| e.counted);
    if n > want {
        return if want == 0 {
            Verdict::Unexpected { counted: n }
        } else {
            Verdict::DuplicateCounted { counted: n }
        };
    }
    if n < want {
        return Verdict::Missing;
    }
    let Some(expected) = expected else {
        return Verdict::Correct;
    };
    for conversion in &counted {
        let matched_by = conversion
            .get("matched_by")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if matched_by != expected.method.matched_by() {
            return Verdict::WrongMethod {
                got: matched_by.to_string(),
            };
        }
    }
    if let (Some(want_id), true) = (&expected.conversion_id, want > 0) {
        if !counted
            .iter()
            .any(|c| conversion_id_of(c) == Some(want_id.as_str()))
        {
            let got = counted
                .first()
                .and_then(|c| conversion_id_of(c))
                .unwrap_or_default();
            return Verdict::WrongConversion {
                got: got.to_string(),
            };
        }
    }
    Verdict::Correct
}

fn conversion_id_of(conversion: &Value) -> Option<&str> {
    conversion.get("conversion_id").and_then(Value::as_str)
}

/// Conversions expected and correctly attributed, per method.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    pub expected: u64,
    pub correct: u64,
}

/// Everything one worker sent and learned; merged across workers at the end.
#[derive(Debug, Default)]
pub struct Ledger {
    /// The report counters this traffic must have added.
    pub counters: Counters,
    pub clicks: Vec<SentClick>,
    /// Attribution results known from answers alone (AFID posts; click ID posts' echo).
    pub tallies: BTreeMap<Method, Tally>,
    pub duplicates_sent: u64,
    /// Duplicates the server answered as counted (server posts say so at once).
    pub duplicates_counted: u64,
    /// Requests whose effect is unknown (no answer, or an answer that should not happen):
    /// the counters can no longer be predicted exactly.
    pub uncertain: u64,
    pub failures: u64,
    pub failure_samples: Vec<String>,
}

impl Ledger {
    pub fn fail(&mut self, what: String) {
        self.failures += 1;
        if self.failure_samples.len() < MAX_FAILURE_SAMPLES {
            self.failure_samples.push(what);
        }
    }

    pub fn tally(&mut self, method: Method) -> &mut Tally {
        self.tallies.entry(method).or_default()
    }

    pub fn merge(&mut self, other: Ledger) {
        let (a, b) = (&mut self.counters, &other.counters);
        a.impressions += b.impressions;
        a.unique_impressions += b.unique_impressions;
        a.clicks += b.clicks;
        a.unique_clicks += b.unique_clicks;
        a.conversions += b.conversions;
        a.approved += b.approved;
        self.clicks.extend(other.clicks);
        for (method, tally) in other.tallies {
            let mine = self.tally(method);
            mine.expected += tally.expected;
            mine.correct += tally.correct;
        }
        self.duplicates_sent += other.duplicates_sent;
        self.duplicates_counted += other.duplicates_counted;
        self.uncertain += other.uncertain;
        self.failures += other.failures;
        for sample in other.failure_samples {
            if self.failure_samples.len() < MAX_FAILURE_SAMPLES {
                self.failure_samples.push(sample);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expected(method: Method, counted: u32, conversion_id: Option<&str>) -> ExpectedConversion {
        ExpectedConversion {
            method,
            conversion_id: conversion_id.map(str::to_string),
            sent: counted.max(1),
            counted,
        }
    }

    fn conversion(id: &str, matched_by: &str, counted: bool) -> Value {
        json!({"conversion_id": id, "matched_by": matched_by, "counted": counted})
    }

    fn check(expected: Option<ExpectedConversion>, conversions: Vec<Value>, verdict: Verdict) {
        let view = json!({"click_id": "c", "conversions": conversions});
        let click = SentClick {
            click_id: "c".to_string(),
            forwarded_ip: None,
            conversion: expected,
        };
        assert_eq!(judge(&click, &view), verdict, "{view}");
    }

    #[test]
    fn verdicts() {
        use Method::*;
        check(None, vec![], Verdict::Correct);
        check(
            Some(expected(Cookie, 1, None)),
            vec![conversion("v1", "cookie", true)],
            Verdict::Correct,
        );
        // A duplicate is recorded (with its audit) but not counted: fine.
        check(
            Some(expected(ClickId, 1, Some("v1"))),
            vec![
                conversion("v1", "click_id", true),
                conversion("v2", "click_id", false),
            ],
            Verdict::Correct,
        );
        check(Some(expected(IpBackup, 1, None)), vec![], Verdict::Missing);
        check(
            Some(expected(IpBackup, 1, None)),
            vec![conversion("v1", "cookie", true)],
            Verdict::WrongMethod {
                got: "cookie".to_string(),
            },
        );
        check(
            Some(expected(ClickId, 1, Some("v1"))),
            vec![conversion("v9", "click_id", true)],
            Verdict::WrongConversion {
                got: "v9".to_string(),
            },
        );
        check(
            Some(expected(Cookie, 1, None)),
            vec![
                conversion("v1", "cookie", true),
                conversion("v2", "cookie", true),
            ],
            Verdict::DuplicateCounted { counted: 2 },
        );
        check(
            None,
            vec![conversion("v1", "ip_backup", true)],
            Verdict::Unexpected { counted: 1 },
        );
        // IP backup off: the conversion must stay off the click.
        check(Some(expected(IpBackup, 0, None)), vec![], Verdict::Correct);
        check(
            None,
            vec![json!({"conversion_id": "v1"})],
            Verdict::Malformed("a conversion without `counted`".to_string()),
        );
        let plain = SentClick {
            click_id: "c".to_string(),
            forwarded_ip: None,
            conversion: None,
        };
        assert!(matches!(judge(&plain, &json!({})), Verdict::Malformed(_)));
        // Behind a trusted proxy the click keeps the forwarded address.
        let forwarded = SentClick {
            forwarded_ip: Some("198.18.0.7".to_string()),
            ..plain
        };
        let view = |ip: &str| json!({"ip": ip, "conversions": []});
        assert_eq!(judge(&forwarded, &view("198.18.0.7")), Verdict::Correct);
        assert_eq!(
            judge(&forwarded, &view("127.0.0.1")),
            Verdict::WrongIp {
                got: "127.0.0.1".to_string()
            }
        );
    }

    #[test]
    fn counted_follows_campaign_rules() {
        let facts = CampaignFacts::default();
        assert_eq!(facts.counted(Method::Cookie, 2), 1);
        assert_eq!(facts.counted(Method::IpBackup, 1), 1);
        let strict = CampaignFacts {
            ip_backup: false,
            allow_afid_posts: false,
            multiple_conversions: true,
            ..CampaignFacts::default()
        };
        assert_eq!(strict.counted(Method::IpBackup, 1), 0);
        assert_eq!(strict.counted(Method::Afid, 1), 0);
        assert_eq!(strict.counted(Method::ClickId, 2), 2);
    }

    #[test]
    fn campaign_facts_from_admin_json() {
        let facts = CampaignFacts::from_json(&json!({
            "id": 1, "ip_backup": false, "revenue": 10.0, "payout": 4.0,
            "payout_percent": 0.0, "postback_token": "s3cret"
        }));
        assert!(!facts.ip_backup);
        assert!(
            facts.allow_afid_posts,
            "absent fields keep the SPEC defaults"
        );
        assert_eq!(facts.revenue, Some(10.0));
        assert_eq!(facts.payout, Some(4.0));
        assert_eq!(facts.postback_token, "s3cret");
        let percent = CampaignFacts::from_json(&json!({"payout": 4.0, "payout_percent": 10.0}));
        assert_eq!(percent.payout, None, "a percent payout cannot be predicted");
    }

    #[test]
    fn report_rows_and_deltas() {
        let report = json!({"rows": [
            {"campaign_id": 2, "affiliate_id": 1, "clicks": 99},
            {"campaign_id": 1, "affiliate_id": 1, "impressions": 10, "unique_impressions": 8,
             "clicks": 5, "unique_clicks": 4, "conversions": 2, "approved": 2,
             "revenue": 20.0, "payout": 8.0}
        ]});
        let after = Counters::from_report(&report, 1, 1);
        assert_eq!(after.clicks, 5);
        assert_eq!(Counters::from_report(&report, 3, 1), Counters::default());
        let before = Counters {
            clicks: 1,
            revenue: 10.0,
            ..Counters::default()
        };
        let delta = after.since(&before);
        assert_eq!(delta.clicks, 4);
        assert_eq!(delta.revenue, 10.0);

        let facts = CampaignFacts {
            revenue: Some(10.0),
            payout: Some(4.0),
            ..CampaignFacts::default()
        };
        let expected = Counters {
            impressions: 10,
            unique_impressions: 8,
            clicks: 5,
            unique_clicks: 4,
            conversions: 2,
            approved: 2,
            ..Counters::default()
        };
        assert_eq!(compare_counters(&expected, &after, &facts), vec![]);
        let fewer = Counters {
            clicks: 4,
            payout: 4.0,
            ..after.clone()
        };
        assert_eq!(
            compare_counters(&expected, &fewer, &facts),
            vec![
                ("clicks", "5".to_string(), "4".to_string()),
                ("payout", "8.00".to_string(), "4.00".to_string())
            ]
        );
    }
}
