//! Read-only views of recorded clicks, conversions and deliveries, as the admin API shows
//! them (serialised to JSON as they are). Fields may grow; names are the API's.

use crate::api::DeliveryState;
use crate::config::ConversionStatus;
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct ClickView {
    pub click_id: String,
    pub campaign_id: u32,
    pub affiliate_id: u32,
    pub creative_id: Option<u32>,
    pub sub_ids: Vec<String>,
    pub extras: Vec<(String, String)>,
    /// RFC 3339 UTC.
    pub time: String,
    pub ip: String,
    pub unique: bool,
    pub conversions: Vec<ConversionView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ConversionView {
    pub conversion_id: String,
    pub click_id: Option<String>,
    pub campaign_id: u32,
    pub affiliate_id: u32,
    pub status: ConversionStatus,
    pub event: String,
    pub time: String,
    pub payout: f64,
    pub revenue: f64,
    pub currency: String,
    pub merchant_ref: Option<String>,
    /// How it was matched: click_id, cookie, ip_backup, afid, unattributed.
    pub matched_by: String,
    /// Whether it counts in reports (not a duplicate, not unattributed).
    pub counted: bool,
    pub audit: Vec<String>,
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DeliveryView {
    /// Sent as `Idempotency-Key` on every attempt.
    pub id: String,
    pub conversion_id: String,
    pub target: String,
    pub state: DeliveryState,
    pub attempts: Vec<AttemptView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AttemptView {
    pub time: String,
    /// HTTP status, or an error class: connect, timeout, blocked_target, ...
    pub result: String,
    pub latency_ms: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ConversionPage {
    pub items: Vec<ConversionView>,
    pub next_cursor: Option<String>,
}
