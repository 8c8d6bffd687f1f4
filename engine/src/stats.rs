//! Real-time counters per (day, campaign, affiliate, creative, sid1) and the report that
//! groups them (SPEC 3). `Report` serialises to the report JSON exactly; `to_csv` gives the
//! CSV form with the same column names.

use crate::api::GroupKey;
use crate::clock::Day;
use serde::Serialize;

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

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub from: Day,
    pub to: Day,
    pub group_by: Vec<GroupKey>,
    pub rows: Vec<serde_json::Value>,
    pub totals: serde_json::Value,
}

impl Report {
    /// The CSV form: a header row with the JSON's names, one row per group.
    pub fn to_csv(&self) -> String {
        todo!()
    }
}
