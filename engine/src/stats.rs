//! Real-time counters per (day, campaign, affiliate, creative, sid1) and the report that
//! groups them (SPEC 3). `Report` serialises to the report JSON exactly; `to_csv` gives the
//! CSV form with the same column names.
//!
//! Each shard owns counters for the records it owns; a report asks every shard for its
//! counters in the date range, grouped, and merges them here. Money is summed in exact
//! micro-units and shown as `f64`.

use crate::api::GroupKey;
use crate::clock::Day;
use crate::codec::{CountersRec, StatKeyRec};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Counters {
    pub impressions: u64,
    pub unique_impressions: u64,
    pub clicks: u64,
    pub unique_clicks: u64,
    pub duplicate_clicks: u64,
    pub conversions: u64,
    pub approved: u64,
    pub revenue: f64,
    pub payout: f64,
}

impl From<&CountersRec> for Counters {
    fn from(c: &CountersRec) -> Self {
        Counters {
            impressions: c.impressions,
            unique_impressions: c.unique_impressions,
            clicks: c.clicks,
            unique_clicks: c.unique_clicks,
            duplicate_clicks: c.clicks.saturating_sub(c.unique_clicks),
            conversions: c.conversions,
            approved: c.approved,
            revenue: crate::money::to_f64(c.revenue_micros),
            payout: crate::money::to_f64(c.payout_micros),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub from: Day,
    pub to: Day,
    pub group_by: Vec<GroupKey>,
    pub rows: Vec<serde_json::Value>,
    pub totals: serde_json::Value,
}

/// The column names of a report row after its group keys, in order.
pub const COUNTER_COLUMNS: [&str; 15] = [
    "impressions",
    "unique_impressions",
    "clicks",
    "unique_clicks",
    "duplicate_clicks",
    "conversions",
    "approved",
    "revenue",
    "payout",
    "profit",
    "margin",
    "ctr",
    "cr",
    "epc",
    "ecpm",
];

/// The group of a stats key under `group_by`: the key with ungrouped parts blanked.
/// Ordered as the report's rows are.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupTuple {
    pub day: Option<u32>,
    pub campaign_id: Option<u32>,
    pub affiliate_id: Option<u32>,
    pub creative_id: Option<Option<u32>>,
    pub sid1: Option<String>,
}

impl GroupTuple {
    pub fn of(key: &StatKeyRec, group_by: &[GroupKey]) -> Self {
        let has = |k| group_by.contains(&k);
        GroupTuple {
            day: has(GroupKey::Day).then_some(key.day),
            campaign_id: has(GroupKey::Campaign).then_some(key.campaign_id),
            affiliate_id: has(GroupKey::Affiliate).then_some(key.affiliate_id),
            creative_id: has(GroupKey::Creative).then_some(key.creative_id),
            sid1: has(GroupKey::Sid1).then(|| key.sid1.clone()),
        }
    }
}

fn ratio(numerator: f64, divisor: f64) -> f64 {
    if divisor == 0.0 {
        0.0
    } else {
        numerator / divisor
    }
}

/// The counters and ratios of one row (or the totals) as JSON fields.
fn counter_fields(c: &CountersRec, out: &mut Map<String, Value>) {
    let v = Counters::from(c);
    let profit_micros = c.revenue_micros - c.payout_micros;
    let profit = crate::money::to_f64(profit_micros);
    let fields = [
        ("impressions", json!(v.impressions)),
        ("unique_impressions", json!(v.unique_impressions)),
        ("clicks", json!(v.clicks)),
        ("unique_clicks", json!(v.unique_clicks)),
        ("duplicate_clicks", json!(v.duplicate_clicks)),
        ("conversions", json!(v.conversions)),
        ("approved", json!(v.approved)),
        ("revenue", json!(v.revenue)),
        ("payout", json!(v.payout)),
        ("profit", json!(profit)),
        ("margin", json!(ratio(profit, v.revenue))),
        ("ctr", json!(ratio(v.clicks as f64, v.impressions as f64))),
        ("cr", json!(ratio(v.conversions as f64, v.clicks as f64))),
        ("epc", json!(ratio(v.payout, v.clicks as f64))),
        (
            "ecpm",
            json!(ratio(1000.0 * v.payout, v.impressions as f64)),
        ),
    ];
    for (name, value) in fields {
        out.insert(name.to_string(), value);
    }
}

/// Most rows a report has; a query whose report would have more is refused, asking for
/// fewer days or group keys. Grouped by sub ID, a report can have a row per click (when
/// affiliates pass their own transaction ID in one): a million rows took 9 s to build and
/// answer (59 MB of CSV) on the CPU that answers tracking requests, and each row is held
/// as JSON until it is sent (about 1 KiB). Exports of single clicks and conversions
/// belong to `/clicks` and `/conversions`.
pub const MAX_REPORT_ROWS: usize = 100_000;

/// A report refused for having more than [`MAX_REPORT_ROWS`] rows.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error(
    "the report has more than {MAX_REPORT_ROWS} rows: ask for fewer days or group by fewer keys"
)]
pub struct TooManyRows;

impl Report {
    /// Builds the report from counters already grouped (by any number of shards: equal
    /// groups are merged here).
    pub fn build(
        from: Day,
        to: Day,
        group_by: Vec<GroupKey>,
        groups: impl IntoIterator<Item = (GroupTuple, CountersRec)>,
    ) -> Result<Report, TooManyRows> {
        let mut merged: BTreeMap<GroupTuple, CountersRec> = BTreeMap::new();
        let mut totals = CountersRec::default();
        for (group, counters) in groups {
            totals.add(&counters);
            merged.entry(group).or_default().add(&counters);
            if merged.len() > MAX_REPORT_ROWS {
                return Err(TooManyRows);
            }
        }
        let rows = merged
            .iter()
            .map(|(g, c)| {
                let mut row = Map::new();
                if let Some(day) = g.day {
                    row.insert("day".into(), json!(Day(day).to_string()));
                }
                if let Some(id) = g.campaign_id {
                    row.insert("campaign_id".into(), json!(id));
                }
                if let Some(id) = g.affiliate_id {
                    row.insert("affiliate_id".into(), json!(id));
                }
                if let Some(id) = g.creative_id {
                    row.insert("creative_id".into(), json!(id));
                }
                if let Some(sid1) = &g.sid1 {
                    row.insert("sid1".into(), json!(sid1));
                }
                counter_fields(c, &mut row);
                Value::Object(row)
            })
            .collect();
        let mut total_map = Map::new();
        counter_fields(&totals, &mut total_map);
        Ok(Report {
            from,
            to,
            group_by,
            rows,
            totals: Value::Object(total_map),
        })
    }

    /// The group-key column names of this report, in SPEC order.
    fn key_columns(&self) -> Vec<&'static str> {
        [
            (GroupKey::Day, "day"),
            (GroupKey::Campaign, "campaign_id"),
            (GroupKey::Affiliate, "affiliate_id"),
            (GroupKey::Creative, "creative_id"),
            (GroupKey::Sid1, "sid1"),
        ]
        .into_iter()
        .filter(|(k, _)| self.group_by.contains(k))
        .map(|(_, name)| name)
        .collect()
    }

    /// The CSV form: a header row with the JSON's names, one row per group.
    pub fn to_csv(&self) -> String {
        let mut columns = self.key_columns();
        columns.extend(COUNTER_COLUMNS);
        let mut out = columns.join(",");
        out.push_str("\r\n");
        for row in &self.rows {
            let cells: Vec<String> = columns
                .iter()
                .map(|c| match row.get(*c) {
                    Some(Value::String(s)) => csv_field(s),
                    Some(Value::Null) | None => String::new(),
                    Some(v) => v.to_string(),
                })
                .collect();
            out.push_str(&cells.join(","));
            out.push_str("\r\n");
        }
        out
    }
}

/// Quotes a CSV field when needed (RFC 4180), and defuses spreadsheet formulas: a field
/// starting with `=`, `+`, `-` or `@` (sub IDs come from affiliates) gets a leading `'`.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(day: u32, campaign: u32, sid1: &str) -> StatKeyRec {
        StatKeyRec {
            day,
            campaign_id: campaign,
            affiliate_id: 7,
            creative_id: None,
            sid1: sid1.into(),
        }
    }

    #[test]
    fn report_groups_merges_and_computes_ratios() {
        let c = |clicks, unique, conv, rev, pay| CountersRec {
            impressions: 10,
            unique_impressions: 5,
            clicks,
            unique_clicks: unique,
            conversions: conv,
            approved: conv,
            revenue_micros: rev,
            payout_micros: pay,
        };
        let group_by = vec![GroupKey::Campaign, GroupKey::Sid1];
        let input = [
            (key(1, 1, "a"), c(4, 3, 1, 10_000_000, 4_000_000)),
            (key(2, 1, "a"), c(4, 4, 1, 10_000_000, 4_000_000)),
            (key(1, 2, "x,\"y\""), c(0, 0, 0, 0, 0)),
        ];
        let groups = input
            .iter()
            .map(|(k, c)| (GroupTuple::of(k, &group_by), *c))
            .collect::<Vec<_>>();
        let r = Report::build(Day(1), Day(2), group_by, groups).expect("3 rows");
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["from"], "1970-01-02");
        assert_eq!(v["group_by"], json!(["campaign", "sid1"]));
        let row = &v["rows"][0];
        assert_eq!(row["campaign_id"], 1);
        assert_eq!(row["sid1"], "a");
        assert!(row.get("day").is_none());
        assert_eq!(row["clicks"], 8);
        assert_eq!(row["duplicate_clicks"], 1);
        assert_eq!(row["revenue"], 20.0);
        assert_eq!(row["profit"], 12.0);
        assert_eq!(row["margin"], 0.6);
        assert_eq!(row["ctr"], 0.4);
        assert_eq!(row["cr"], 0.25);
        assert_eq!(row["epc"], 1.0);
        assert_eq!(row["ecpm"], 400.0);
        let zero = &v["rows"][1];
        assert_eq!(zero["cr"], 0.0);
        assert_eq!(zero["margin"], 0.0);
        assert_eq!(v["totals"]["impressions"], 30);
        let csv = r.to_csv();
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert!(lines[0].starts_with("campaign_id,sid1,impressions,"));
        assert!(lines[1].starts_with("1,a,20,10,8,7,1,2,2,20.0,8.0,12.0,0.6,"));
        assert!(
            lines[2].starts_with("2,\"x,\"\"y\"\"\",10,"),
            "{}",
            lines[2]
        );
    }

    /// A report of one row more than [`MAX_REPORT_ROWS`] is refused, one of exactly that
    /// many is built; equal groups from several shards count once.
    #[test]
    fn reports_past_the_row_bound_are_refused() {
        let group_by = vec![GroupKey::Sid1];
        let rows = |n: usize| {
            (0..n).map(|i| {
                let k = key(1, 1, &format!("s{i}"));
                (GroupTuple::of(&k, &group_by), CountersRec::default())
            })
        };
        let built = Report::build(Day(1), Day(1), group_by.clone(), rows(MAX_REPORT_ROWS));
        assert_eq!(built.map(|r| r.rows.len()), Ok(MAX_REPORT_ROWS));
        let twice = rows(MAX_REPORT_ROWS).chain(rows(MAX_REPORT_ROWS));
        assert!(Report::build(Day(1), Day(1), group_by.clone(), twice).is_ok());
        let over = Report::build(Day(1), Day(1), group_by.clone(), rows(MAX_REPORT_ROWS + 1));
        assert_eq!(over.err(), Some(TooManyRows));
    }
}
