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

/// RFC 3339 UTC text of a Unix time in ms (`2026-11-25T18:47:35.123Z`).
pub fn rfc3339(ms: u64) -> String {
    let day = crate::clock::Day::from_unix_ms(ms);
    let in_day_ms = ms - day.start_ms();
    let (h, m, s, milli) = (
        in_day_ms / 3_600_000,
        in_day_ms / 60_000 % 60,
        in_day_ms / 1000 % 60,
        in_day_ms % 1000,
    );
    format!("{day}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

pub(crate) fn delivery_view(
    conversion: &crate::codec::ConversionRec,
    d: &crate::codec::DeliveryRec,
) -> DeliveryView {
    DeliveryView {
        id: crate::ids::DeliveryId {
            conversion: crate::ids::Id(conversion.id),
            seq: d.seq,
        }
        .to_string(),
        conversion_id: crate::ids::Id(conversion.id).to_string(),
        target: d.url.clone(),
        state: d.state,
        attempts: d
            .attempts
            .iter()
            .map(|a| AttemptView {
                time: rfc3339(a.started_ms),
                result: a.result.clone(),
                latency_ms: a.latency_ms,
            })
            .collect(),
    }
}

pub(crate) fn conversion_view(c: &crate::codec::ConversionRec) -> ConversionView {
    ConversionView {
        conversion_id: crate::ids::Id(c.id).to_string(),
        click_id: c.click_id.map(|id| crate::ids::Id(id).to_string()),
        campaign_id: c.campaign_id,
        affiliate_id: c.affiliate_id,
        status: c.status,
        event: c.event.to_string(),
        time: rfc3339(c.time_ms),
        payout: crate::money::to_f64(c.payout_micros),
        revenue: crate::money::to_f64(c.revenue_micros),
        currency: c.currency.to_string(),
        merchant_ref: c.merchant_ref.as_deref().map(str::to_string),
        matched_by: c.matched_by.as_str().to_string(),
        counted: c.counted,
        audit: c.audit.iter().map(ToString::to_string).collect(),
        deliveries: c.deliveries.iter().map(|d| delivery_view(c, d)).collect(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339(1_795_632_455_123),
            "2026-11-25T18:47:35.123Z"
        );
    }
}
