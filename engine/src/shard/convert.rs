//! Attribution and recording of conversions on the owning shard (SPEC 2.3).
//!
//! The engine walks the attribution order (ClickID, cookie, IP backup, AFID post,
//! unattributed) and asks the shard that owns each candidate; the shard either answers
//! [`ConvReply::NoMatch`] (the engine tries the next rule) or decides and records. Because
//! one shard serialises every conversion of a click, a click ID is redeemed exactly once
//! per event even under concurrent posts.

use super::{ShardActor, MERCHANT_REF_WINDOW_MS};
use crate::api::{ConversionOutcome, ConversionRequest, OutcomeStatus, PixelType, MAX_EXTRAS};
use crate::codec::{phrase, AuditLine, ConversionRec, MatchedBy, ShardRecord, ShortText};
use crate::config::{Campaign, ConversionStatus};
use crate::ids::Id;
use std::sync::Arc;

/// Audit lines of a conversion matched to a click at the campaign's money: the match, the
/// revenue and the payout.
const TYPICAL_AUDIT_LINES: usize = 3;

/// A validated conversion request.
#[derive(Debug)]
pub struct ConvInput {
    pub req: ConversionRequest,
    /// `Event`, `sale` when absent.
    pub event: String,
    pub payout_override_micros: Option<i64>,
    pub revenue_override_micros: Option<i64>,
    pub total_sales_micros: Option<i64>,
    /// The visitor's fingerprint (browser pixels).
    pub fingerprint: u64,
}

/// Which attribution rule to try on this shard.
#[derive(Clone, Debug)]
pub enum How {
    ClickId(Id),
    Cookie(Id),
    IpBackup,
    /// AFID post; notes explain why earlier rules did not match.
    Afid(Vec<String>),
    Unattributed(Vec<String>),
}

#[derive(Debug)]
pub enum ConvReply {
    /// This rule did not match; the reason goes into the final audit.
    NoMatch(String),
    Done(ConversionOutcome),
}

fn refuse(status: OutcomeStatus, reason: &str) -> (ConvReply, bool) {
    (
        ConvReply::Done(ConversionOutcome::refused(status, reason)),
        false,
    )
}

/// Server-post authentication (SPEC 2.3): the campaign's token and IP allowlist.
fn authorize(
    campaign: &Campaign,
    req: &ConversionRequest,
) -> Result<(), (OutcomeStatus, &'static str)> {
    if req.pixel_type != PixelType::S2s {
        return Ok(());
    }
    if !campaign.postback_token.is_empty() {
        let given = req.token.as_deref().unwrap_or("");
        if !constant_time_eq(given.as_bytes(), campaign.postback_token.as_bytes()) {
            return Err((OutcomeStatus::Unauthorized, "token"));
        }
    }
    if !campaign.postback_ips.is_empty()
        && !campaign
            .postback_ips
            .iter()
            .any(|net| net.contains(&req.visitor.ip))
    {
        return Err((OutcomeStatus::Forbidden, "ip not allowed"));
    }
    Ok(())
}

/// Compares secrets without an early exit, so timing does not reveal a prefix match.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The click a conversion matched, copied out of the store.
struct MatchedClick {
    id: Id,
    campaign_id: u32,
    affiliate_id: u32,
    creative_id: Option<u32>,
    sub_ids: Vec<String>,
    extras: Vec<(String, String)>,
}

impl ShardActor {
    pub(super) fn convert(&mut self, input: &ConvInput, how: How) -> (ConvReply, bool) {
        if self.state.conversions_full() {
            tracing::warn!("shard full: a conversion is refused");
            return (ConvReply::Done(ConversionOutcome::unavailable()), false);
        }
        let now = self.now_ms();
        let req = &input.req;
        let cid = req.source.campaign_id;
        // Most conversions get exactly these many lines (the match, revenue, payout), so
        // the audit is boxed without a reallocation.
        let mut audit: Vec<AuditLine> = Vec::with_capacity(TYPICAL_AUDIT_LINES);
        let (matched_by, click_idx) =
            match &how {
                How::ClickId(id) => match self.state.find_click(id) {
                    Some(i) => (MatchedBy::ClickId, Some(i)),
                    None => return refuse(OutcomeStatus::UnknownClick, "click_id"),
                },
                How::Cookie(id) => match self.state.find_click(id) {
                    Some(i) => (MatchedBy::Cookie, Some(i)),
                    None => {
                        return (
                            ConvReply::NoMatch(format!("cookie click {id} unknown")),
                            false,
                        )
                    }
                },
                How::IpBackup => {
                    let Some(campaign) = self.shared.catalog.campaign(cid) else {
                        return (
                            ConvReply::NoMatch("ip backup: unknown campaign".into()),
                            false,
                        );
                    };
                    let window_ms = u64::from(campaign.backup_window_hours) * 3_600_000;
                    let found = self
                        .state
                        .latest_click(input.fingerprint, cid)
                        .filter(|&i| {
                            self.state.click(i).is_some_and(|c| {
                                now.saturating_sub(c.time_ms) <= window_ms && c.time_ms <= now
                            })
                        });
                    match found {
                        Some(i) => (MatchedBy::IpBackup, Some(i)),
                        None => return (
                            ConvReply::NoMatch(
                                "ip backup: no click from this visitor within the backup window"
                                    .into(),
                            ),
                            false,
                        ),
                    }
                }
                How::Afid(notes) => {
                    audit.extend(notes.iter().map(|n| AuditLine::from(n.as_str())));
                    (MatchedBy::Afid, None)
                }
                How::Unattributed(notes) => {
                    audit.extend(notes.iter().map(|n| AuditLine::from(n.as_str())));
                    (MatchedBy::Unattributed, None)
                }
            };

        // The click, its campaign, and whether it may still convert.
        let mut matched = None;
        let campaign: Option<Arc<Campaign>>;
        if let Some(i) = click_idx {
            let Some(c) = self.state.click(i).copied() else {
                return refuse(OutcomeStatus::UnknownClick, "click_id");
            };
            let by_click_id = matches!(how, How::ClickId(_));
            let no_match = |reason: String| {
                if by_click_id {
                    refuse(OutcomeStatus::UnknownClick, &reason)
                } else {
                    (ConvReply::NoMatch(reason), false)
                }
            };
            let Some(camp) = self.shared.catalog.campaign(c.campaign_id) else {
                return no_match(format!(
                    "campaign {} of the click no longer exists",
                    c.campaign_id
                ));
            };
            if cid != 0 && cid != c.campaign_id {
                return no_match(format!(
                    "click belongs to campaign {}, not {cid}",
                    c.campaign_id
                ));
            }
            let life_ms = u64::from(camp.cookie_life_days) * 86_400_000;
            if now.saturating_sub(c.time_ms) > life_ms {
                if by_click_id {
                    return refuse(OutcomeStatus::Expired, "click past its cookie life");
                }
                return (
                    ConvReply::NoMatch(format!("{} click {} expired", matched_by.as_str(), c.id)),
                    false,
                );
            }
            let (subs, extras) = self.state.tail(&c);
            matched = Some(MatchedClick {
                id: c.id,
                campaign_id: c.campaign_id,
                affiliate_id: c.affiliate_id,
                creative_id: c.creative_id(),
                sub_ids: subs.to_vec(),
                extras: extras.to_vec(),
            });
            audit.push(AuditLine::Matched {
                by: matched_by,
                click: c.id.0,
            });
            campaign = Some(camp);
        } else {
            campaign = self.shared.catalog.campaign(cid);
        }

        if matched_by == MatchedBy::Afid {
            let Some(camp) = &campaign else {
                return refuse(OutcomeStatus::Invalid, "CID");
            };
            if !camp.allow_afid_posts {
                return refuse(
                    OutcomeStatus::Forbidden,
                    "AFID posts are not allowed on this campaign",
                );
            }
            match self.shared.catalog.affiliate(req.source.affiliate_id) {
                None => return refuse(OutcomeStatus::Invalid, "AFID"),
                Some(a) if a.status == crate::config::AffiliateStatus::Blocked => {
                    return refuse(OutcomeStatus::Forbidden, "affiliate blocked")
                }
                Some(_) => {}
            }
            audit.push(AuditLine::from(format!(
                "AFID post for affiliate {}",
                req.source.affiliate_id
            )));
        }
        if let Some(camp) = &campaign {
            if let Err((status, reason)) = authorize(camp, req) {
                return refuse(status, reason);
            }
            if camp.dedupe_merchant_ref && req.merchant_ref.as_deref().unwrap_or("").is_empty() {
                return refuse(OutcomeStatus::Invalid, "MerchantReferenceID");
            }
        }

        let conversion_id = Id::mint(match &matched {
            Some(m) => m.id.route_key(),
            None => crate::ids::pair_route_key(cid, req.source.affiliate_id),
        });

        // Duplicates: the same click and event (unless multiple conversions are allowed),
        // or a merchant reference already seen on the campaign within 90 days.
        let mut duplicate_of: Option<(Id, &str)> = None;
        if let (Some(m), Some(camp)) = (&matched, &campaign) {
            if !camp.multiple_conversions {
                duplicate_of = self
                    .state
                    .conversions_of(&m.id)
                    .find(|c| {
                        c.duplicate_of.is_none() && c.event.eq_ignore_ascii_case(&input.event)
                    })
                    .map(|c| {
                        (
                            Id(c.id),
                            "duplicate: the click already converted for this event",
                        )
                    });
            }
        }
        let mut reservation = None;
        if duplicate_of.is_none() {
            if let (Some(camp), Some(mref)) = (
                &campaign,
                req.merchant_ref.as_deref().filter(|r| !r.is_empty()),
            ) {
                if camp.dedupe_merchant_ref {
                    let key = (camp.id, mref.to_string());
                    let horizon = now.saturating_sub(MERCHANT_REF_WINDOW_MS);
                    match self.shared.merchant_refs.entry(key.clone()) {
                        dashmap::Entry::Occupied(e) if e.get().1 >= horizon => {
                            duplicate_of = Some((
                                e.get().0,
                                "duplicate: merchant reference already seen on this campaign",
                            ));
                        }
                        dashmap::Entry::Occupied(mut e) => {
                            e.insert((conversion_id, now));
                            reservation = Some(key);
                        }
                        dashmap::Entry::Vacant(e) => {
                            e.insert((conversion_id, now));
                            reservation = Some(key);
                        }
                    }
                }
            }
        }

        // Money (exact micro-units) and its audit.
        let attributed = matches!(
            matched_by,
            MatchedBy::ClickId | MatchedBy::Cookie | MatchedBy::IpBackup | MatchedBy::Afid
        );
        let (mut payout, mut revenue, mut currency) = (0i64, 0i64, ShortText::from("USD"));
        if let Some(camp) = &campaign {
            currency = ShortText::from(camp.currency.as_str());
            let custom = camp.allow_custom_params;
            revenue = crate::money::to_micros(camp.revenue).unwrap_or(0);
            match input.revenue_override_micros {
                Some(r) if custom => {
                    revenue = r;
                    audit.push(AuditLine::Fixed(phrase::REVENUE_FROM_OVERRIDE));
                }
                Some(_) => {
                    audit.push(AuditLine::Fixed(phrase::MP_IGNORED));
                    audit.push(AuditLine::Fixed(phrase::REVENUE_FROM_CAMPAIGN));
                }
                None => audit.push(AuditLine::Fixed(phrase::REVENUE_FROM_CAMPAIGN)),
            }
            match input.payout_override_micros {
                Some(p) if custom => {
                    payout = p;
                    audit.push(AuditLine::Fixed(phrase::PAYOUT_FROM_OVERRIDE));
                }
                other => {
                    if other.is_some() {
                        audit.push(AuditLine::Fixed(phrase::AP_IGNORED));
                    }
                    if camp.payout_percent > 0.0 {
                        let total = input.total_sales_micros.unwrap_or(0);
                        payout = crate::money::percent_of(total, camp.payout_percent);
                        audit.push(AuditLine::from(format!(
                            "payout {}% of TotalSales {}{}",
                            camp.payout_percent,
                            crate::money::format(total),
                            if input.total_sales_micros.is_none() {
                                " (absent)"
                            } else {
                                ""
                            }
                        )));
                    } else {
                        payout = crate::money::to_micros(camp.payout).unwrap_or(0);
                        audit.push(AuditLine::Fixed(phrase::PAYOUT_FROM_CAMPAIGN));
                    }
                }
            }
            match &req.currency_override {
                Some(c) if custom => {
                    currency = ShortText::from(c.to_ascii_uppercase());
                    audit.push(AuditLine::Fixed(phrase::CURRENCY_FROM_OVERRIDE));
                }
                Some(_) => audit.push(AuditLine::Fixed(phrase::CURRENCY_IGNORED)),
                None => {}
            }
        }
        if !attributed {
            payout = 0;
            revenue = 0;
            audit.push(AuditLine::Fixed(phrase::UNATTRIBUTED));
        }
        if let Some((orig, why)) = duplicate_of {
            audit.push(AuditLine::from(format!("{why} (original {orig})")));
        }

        let (campaign_id, affiliate_id, creative_id, sub_ids, mut extras, click_id) = match matched
        {
            Some(m) => (
                m.campaign_id,
                m.affiliate_id,
                m.creative_id,
                m.sub_ids,
                m.extras,
                Some(m.id.0),
            ),
            None => (
                cid,
                req.source.affiliate_id,
                req.source.creative_id,
                req.source.sub_ids.clone(),
                Vec::new(),
                None,
            ),
        };
        for (k, v) in &req.source.extras {
            if extras.len() < 2 * MAX_EXTRAS
                && !extras.iter().any(|(ek, _)| ek.eq_ignore_ascii_case(k))
            {
                extras.push((k.clone(), v.clone()));
            }
        }
        let status = req.status;
        let mut rec = ConversionRec {
            id: conversion_id.0,
            time_ms: now,
            click_id,
            campaign_id,
            affiliate_id,
            creative_id,
            sub_ids: sub_ids.into_boxed_slice(),
            extras: extras.into_boxed_slice(),
            event: ShortText::from(input.event.as_str()),
            merchant_ref: req
                .merchant_ref
                .as_deref()
                .filter(|r| !r.is_empty())
                .map(ShortText::from),
            status,
            payout_micros: payout,
            revenue_micros: revenue,
            currency,
            matched_by,
            pixel_type: req.pixel_type,
            counted: attributed && duplicate_of.is_none(),
            duplicate_of: duplicate_of.map(|(id, _)| id.0),
            audit: audit.into_boxed_slice(),
            deliveries: Vec::new(),
        };
        rec.deliveries =
            crate::delivery::deliveries_for(&self.shared.catalog, &rec, status, 0, now);
        // Kept for the conversion's lifetime: no spare capacity (none when it has none).
        rec.deliveries.shrink_to_fit();
        let pixels = crate::delivery::browser_pixels(&self.shared.catalog, &rec, req.pixel_type);

        let outcome = match duplicate_of {
            Some((orig, _)) => ConversionOutcome {
                status: OutcomeStatus::Duplicate,
                reason: Some("duplicate".into()),
                conversion_id: Some(orig.to_string()),
                click_id: rec.click_id.map(|c| Id(c).to_string()),
                payout: None,
                revenue: None,
                currency: None,
                browser_pixels: Vec::new(),
            },
            None => ConversionOutcome {
                status: match status {
                    ConversionStatus::Approved => OutcomeStatus::Approved,
                    ConversionStatus::Pending => OutcomeStatus::Pending,
                    ConversionStatus::Rejected => OutcomeStatus::Rejected,
                },
                reason: (!attributed).then(|| "unattributed".to_string()),
                conversion_id: Some(conversion_id.to_string()),
                click_id: rec.click_id.map(|c| Id(c).to_string()),
                payout: Some(crate::money::to_f64(payout)),
                revenue: Some(crate::money::to_f64(revenue)),
                currency: Some(rec.currency.to_string()),
                browser_pixels: pixels,
            },
        };
        let jobs: Vec<_> = rec
            .deliveries
            .iter()
            .map(|d| crate::delivery::job(&conversion_id, d))
            .collect();
        let record = ShardRecord::Conversion(rec);
        if let Err(e) = self.write(&record) {
            if let Some(key) = reservation {
                self.shared
                    .merchant_refs
                    .remove_if(&key, |_, (id, _)| *id == conversion_id);
            }
            tracing::warn!(reason = %e.0, "conversion not recorded");
            return (ConvReply::Done(ConversionOutcome::unavailable()), false);
        }
        if let Some(key) = reservation {
            self.current.reservations.push((key, conversion_id));
        }
        self.state.apply(record);
        self.current.deliveries.extend(jobs);
        self.count_conversion(matched_by, outcome.status);
        (ConvReply::Done(outcome), true)
    }
}
