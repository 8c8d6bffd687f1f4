//! Which deliveries and browser pixels a conversion gets (SPEC 5.1, 5.2), their expanded
//! URLs and bodies, and the macro values templates see (SPEC 5.3).

use crate::api::{BrowserPixel, DeliveryState, PixelType};
use crate::catalog::Catalog;
use crate::codec::{ConversionRec, DeliveryRec, DeliveryTarget};
use crate::config::{ConversionStatus, HttpMethod, PixelKind};
use crate::dispatcher::DeliveryJob;
use crate::fields::{self, Field};
use crate::ids::{DeliveryId, Id};
use crate::template::{self, MacroValue, Macros};
use std::borrow::Cow;
use std::cell::OnceCell;

/// Macro values of a click (landing URLs) or a conversion (pixels).
pub struct MacroValues<'a> {
    pub click_id: Option<String>,
    pub conversion_id: Option<String>,
    pub campaign_id: u32,
    pub affiliate_id: u32,
    pub creative_id: Option<u32>,
    pub sub_ids: &'a [String],
    pub extras: &'a [(String, String)],
    /// Conversion values; `None` on clicks.
    pub conversion: Option<&'a ConversionRec>,
    pub status: Option<ConversionStatus>,
    pub timestamp_ms: u64,
}

impl Macros for MacroValues<'_> {
    fn value(&self, name: &str) -> Option<Cow<'_, str>> {
        match fields::lookup(name) {
            Some(field) => self.field_value(field).map(MacroValue::into_text),
            None => self
                .extras
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| Cow::Borrowed(v.as_str())),
        }
    }

    /// Borrowed text and plain numbers: expanding a landing URL allocates nothing but
    /// the URL itself.
    fn field_value(&self, field: Field) -> Option<MacroValue<'_>> {
        fn text(s: &str) -> Option<MacroValue<'_>> {
            Some(MacroValue::Text(Cow::Borrowed(s)))
        }
        let sub_id = |index: usize| self.sub_ids.get(index).map_or("", |s| s.as_str());
        match field {
            Field::ClickId => text(self.click_id.as_deref().unwrap_or("")),
            Field::ConversionId => text(self.conversion_id.as_deref().unwrap_or("")),
            Field::CampaignId => Some(MacroValue::Number(u64::from(self.campaign_id))),
            Field::AffiliateId => Some(MacroValue::Number(u64::from(self.affiliate_id))),
            Field::CreativeId => match self.creative_id {
                Some(c) => Some(MacroValue::Number(u64::from(c))),
                None => text(""),
            },
            Field::SidList => text(sub_id(0)),
            Field::Sid(n) => text(sub_id(usize::from(n).saturating_sub(1))),
            Field::Timestamp => Some(MacroValue::Number(self.timestamp_ms / 1000)),
            Field::Payout => self
                .conversion
                .map(|c| MacroValue::Text(Cow::Owned(crate::money::format(c.payout_micros)))),
            Field::Revenue => self
                .conversion
                .map(|c| MacroValue::Text(Cow::Owned(crate::money::format(c.revenue_micros)))),
            Field::Currency => self
                .conversion
                .map(|c| MacroValue::Text(Cow::Borrowed(c.currency.as_str()))),
            Field::Status => self
                .status
                .map(|s| MacroValue::Text(Cow::Borrowed(s.as_str()))),
            Field::Event => self
                .conversion
                .map(|c| MacroValue::Text(Cow::Borrowed(c.event.as_str()))),
            Field::MerchantRef => self
                .conversion
                .map(|c| MacroValue::Text(Cow::Borrowed(c.merchant_ref.as_deref().unwrap_or("")))),
            Field::TotalSales
            | Field::PixelType
            | Field::Token
            | Field::CookieFlag
            | Field::RedirectFlag
            | Field::TrackFlag => None,
        }
    }
}

/// The macro values of a conversion in a given status.
pub fn conversion_macros(c: &ConversionRec, status: ConversionStatus) -> MacroValues<'_> {
    MacroValues {
        click_id: c.click_id.map(|id| Id(id).to_string()),
        conversion_id: Some(Id(c.id).to_string()),
        campaign_id: c.campaign_id,
        affiliate_id: c.affiliate_id,
        creative_id: c.creative_id,
        sub_ids: &c.sub_ids,
        extras: &c.extras,
        conversion: Some(c),
        status: Some(status),
        timestamp_ms: c.time_ms,
    }
}

/// The JSON body of POST pixels and webhooks: the conversion in the given status.
pub fn conversion_body(c: &ConversionRec, status: ConversionStatus, now_ms: u64) -> Vec<u8> {
    let body = serde_json::json!({
        "type": format!("conversion.{}", status.as_str()),
        "timestamp": crate::view::rfc3339(now_ms),
        "data": {
            "conversion_id": Id(c.id).to_string(),
            "click_id": c.click_id.map(|id| Id(id).to_string()),
            "campaign_id": c.campaign_id,
            "affiliate_id": c.affiliate_id,
            "creative_id": c.creative_id,
            "sub_ids": c.sub_ids,
            "status": status.as_str(),
            "event": c.event,
            "payout": crate::money::to_f64(c.payout_micros),
            "revenue": crate::money::to_f64(c.revenue_micros),
            "currency": c.currency,
            "merchant_ref": c.merchant_ref,
            "matched_by": c.matched_by.as_str(),
            "time": crate::view::rfc3339(c.time_ms),
        }
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The deliveries a counted conversion gets in `status`: the affiliate's campaign-level
/// server pixels if it has any, else its global ones, that fire on `status`; plus every
/// webhook that fires on `status`. Sequence numbers start at `first_seq`.
pub fn deliveries_for(
    catalog: &Catalog,
    c: &ConversionRec,
    status: ConversionStatus,
    first_seq: u32,
    now_ms: u64,
) -> Vec<DeliveryRec> {
    if !c.counted {
        return Vec::new();
    }
    // Built on the first delivery only: most conversions have none, and the macro values
    // format two IDs.
    let macros = OnceCell::new();
    let macros = || macros.get_or_init(|| conversion_macros(c, status));
    let mut out = Vec::new();
    let mut push = |target, url: String, method, secret: Option<String>| {
        let body = (method == HttpMethod::Post).then(|| conversion_body(c, status, now_ms));
        out.push(DeliveryRec {
            seq: first_seq + out.len() as u32,
            target,
            fired_on: status,
            url,
            method,
            body,
            webhook_secret: secret,
            state: DeliveryState::Pending,
            attempts_made: 0,
            next_attempt_ms: now_ms,
            attempts: Vec::new(),
            created_ms: now_ms,
        });
    };
    if let Some(aff) = catalog.affiliate(c.affiliate_id) {
        let server = |campaign: Option<u32>| {
            aff.pixels
                .iter()
                .filter(move |p| p.kind == PixelKind::Server && p.campaign == campaign)
        };
        let level = if server(Some(c.campaign_id)).next().is_some() {
            Some(c.campaign_id)
        } else {
            None
        };
        for p in server(level).filter(|p| p.fire_on.contains(&status)) {
            push(
                DeliveryTarget::AffiliatePixel {
                    affiliate_id: aff.id,
                },
                template::expand_url(&p.url, macros()),
                p.method,
                None,
            );
        }
    }
    for w in catalog.webhook_list() {
        if w.fire_on.contains(&status) {
            push(
                DeliveryTarget::Webhook { webhook_id: w.id },
                template::expand_url(&w.url, macros()),
                w.method,
                (!w.secret.is_empty()).then(|| w.secret.clone()),
            );
        }
    }
    out
}

/// Browser pixels for `iframe` and `js` answers (none for `img` and `s2s`: LinkTrust's
/// compliance rule): the affiliate's campaign-level browser pixels if any, else its
/// global ones, that fire on the conversion's status.
pub fn browser_pixels(
    catalog: &Catalog,
    c: &ConversionRec,
    pixel_type: PixelType,
) -> Vec<BrowserPixel> {
    if !matches!(pixel_type, PixelType::Iframe | PixelType::Js) || !c.counted {
        return Vec::new();
    }
    let Some(aff) = catalog.affiliate(c.affiliate_id) else {
        return Vec::new();
    };
    let browser = |campaign: Option<u32>| {
        aff.pixels
            .iter()
            .filter(move |p| p.kind != PixelKind::Server && p.campaign == campaign)
    };
    let level = if browser(Some(c.campaign_id)).next().is_some() {
        Some(c.campaign_id)
    } else {
        None
    };
    let macros = conversion_macros(c, c.status);
    browser(level)
        .filter(|p| p.fire_on.contains(&c.status))
        .map(|p| {
            if !p.html.is_empty() {
                return BrowserPixel::Html {
                    html: template::expand_html(&p.html, &macros),
                };
            }
            let url = template::expand_url(&p.url, &macros);
            match p.kind {
                PixelKind::Iframe => BrowserPixel::Iframe { url },
                PixelKind::Js => BrowserPixel::Script { url },
                _ => BrowserPixel::Image { url },
            }
        })
        .collect()
}

/// The dispatcher job of a pending delivery.
pub fn job(conversion: &Id, d: &DeliveryRec) -> DeliveryJob {
    DeliveryJob {
        id: DeliveryId {
            conversion: *conversion,
            seq: d.seq,
        }
        .to_string(),
        url: d.url.clone(),
        method: d.method,
        body: d.body.clone(),
        webhook_secret: d.webhook_secret.clone(),
        attempts_made: d.attempts_made,
        not_before_ms: d.next_attempt_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `field_value` (what templates use) and `value` (by canonical name) agree for every
    /// field, so expanding through either gives the same URL.
    #[test]
    fn field_values_agree_with_values_by_name() {
        let sub_ids = vec!["s1".to_string(), String::new(), "s3".to_string()];
        let extras = vec![("utm_source".to_string(), "mail".to_string())];
        let click = MacroValues {
            click_id: Some("Ab3_x-9".into()),
            conversion_id: None,
            campaign_id: 3,
            affiliate_id: 7,
            creative_id: None,
            sub_ids: &sub_ids,
            extras: &extras,
            conversion: None,
            status: None,
            timestamp_ms: 1_764_000_000_123,
        };
        let fields = [
            Field::CampaignId,
            Field::AffiliateId,
            Field::SidList,
            Field::CreativeId,
        ]
        .into_iter()
        .chain((1..=10).map(Field::Sid))
        .chain([
            Field::ClickId,
            Field::ConversionId,
            Field::Timestamp,
            Field::Payout,
        ]);
        for field in fields {
            let by_field = click.field_value(field).map(MacroValue::into_text);
            let by_name = click.value(fields::canonical_name(field));
            assert_eq!(by_field, by_name, "{field:?}");
        }
        let url = template::expand_url(
            "https://s.example/?c={ClickID}&a={AFID}&o={cid}&s={sid1}&s3={sid3}&cr={adid}&t={timestamp}&u={utm_source}",
            &click,
        );
        assert_eq!(
            url,
            "https://s.example/?c=Ab3_x-9&a=7&o=3&s=s1&s3=s3&cr=&t=1764000000&u=mail"
        );
    }
}
