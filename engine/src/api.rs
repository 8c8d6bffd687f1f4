//! The engine's public vocabulary: what the server hands in (requests) and gets back
//! (outcomes and views). Plain data; the server translates HTTP to these and back.

use crate::config::ConversionStatus;
use serde::Serialize;
use std::net::IpAddr;

/// Longest accepted parameter value, in bytes (SPEC 7).
pub const MAX_VALUE_BYTES: usize = 256;
/// Most extra `name=value` pairs kept with a click or conversion (SPEC 1).
pub const MAX_EXTRAS: usize = 10;
/// Sub IDs per click: sid1..sid10.
pub const MAX_SUB_IDS: usize = 10;

/// Who is behind a browser request; the fingerprint is computed from these by the engine.
#[derive(Clone, Debug)]
pub struct Visitor {
    /// The client IP as SPEC 2.1 determines it (peer, or trusted proxy's X-Forwarded-For).
    pub ip: IpAddr,
    pub user_agent: String,
    pub accept_language: String,
}

/// The affiliate-side identifiers carried by clicks, impressions and AFID posts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Source {
    pub campaign_id: u32,
    pub affiliate_id: u32,
    pub creative_id: Option<u32>,
    /// sid1..sid10 in order; an empty string is an absent sub ID. At most [`MAX_SUB_IDS`].
    pub sub_ids: Vec<String>,
    /// Unknown extra pairs, names as sent. At most [`MAX_EXTRAS`].
    pub extras: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct ClickRequest {
    pub source: Source,
    pub visitor: Visitor,
    /// The value of the visitor's `ct_<CID>` cookie, if any (uniqueness).
    pub cookie_click_id: Option<String>,
    /// `T=0` clears this: redirect only, nothing recorded or counted.
    pub track: bool,
}

/// Why a click or impression was not accepted; the server sends clicks to `fallback_url`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    UnknownCampaign,
    PausedCampaign,
    UnknownAffiliate,
    BlockedAffiliate,
}

impl Rejection {
    /// A short reason, for `text/plain` answers and the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownCampaign => "unknown_campaign",
            Self::PausedCampaign => "paused_campaign",
            Self::UnknownAffiliate => "unknown_affiliate",
            Self::BlockedAffiliate => "blocked_affiliate",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ClickOutcome {
    /// Recorded durably (per the sync policy) before this is returned.
    Tracked {
        click_id: String,
        /// The landing URL, macros substituted and URL-encoded.
        location: String,
        cookie_life_secs: u64,
        unique: bool,
    },
    /// Not recorded: `T=0`, or the log cannot persist (then `degraded` is true and the
    /// click is counted as untracked). The visitor still goes to the landing page.
    Untracked { location: String, degraded: bool },
}

#[derive(Clone, Debug)]
pub struct ImpressionRequest {
    pub source: Source,
    pub visitor: Visitor,
}

/// How the conversion was sent: browser pixel flavours or a server post.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelType {
    #[default]
    Img,
    Iframe,
    Js,
    S2s,
}

impl PixelType {
    pub fn parse(value: &str) -> Option<Self> {
        [Self::Img, Self::Iframe, Self::Js, Self::S2s]
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(value))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Img => "img",
            Self::Iframe => "iframe",
            Self::Js => "js",
            Self::S2s => "s2s",
        }
    }

    pub fn is_browser(self) -> bool {
        self != Self::S2s
    }
}

#[derive(Clone, Debug)]
pub struct ConversionRequest {
    pub pixel_type: PixelType,
    pub click_id: Option<String>,
    /// Campaign and affiliate fields as sent; `campaign_id` 0 / `affiliate_id` 0 = absent.
    pub source: Source,
    /// Every `ct_<CID>` cookie the browser sent: (campaign id, click id).
    pub cookies: Vec<(u32, String)>,
    pub visitor: Visitor,
    /// `Event`, default `sale`.
    pub event: String,
    pub merchant_ref: Option<String>,
    pub payout_override: Option<f64>,
    pub revenue_override: Option<f64>,
    pub currency_override: Option<String>,
    pub total_sales: Option<f64>,
    pub status: ConversionStatus,
    /// `token` parameter or `Authorization: Bearer` value, for server posts.
    pub token: Option<String>,
}

/// The `status` of a conversion answer (SPEC 2.3), with its HTTP status for `s2s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    Approved,
    Pending,
    Rejected,
    Duplicate,
    UnknownClick,
    Expired,
    Unauthorized,
    Forbidden,
    Invalid,
    Unavailable,
}

impl OutcomeStatus {
    /// The wire name (as serialized in answers and used as a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Pending => "pending",
            Self::Rejected => "rejected",
            Self::Duplicate => "duplicate",
            Self::UnknownClick => "unknown_click",
            Self::Expired => "expired",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Invalid => "invalid",
            Self::Unavailable => "unavailable",
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            Self::Approved | Self::Pending | Self::Rejected => 200,
            Self::Duplicate => 409,
            Self::UnknownClick | Self::Expired => 404,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::Invalid => 400,
            Self::Unavailable => 503,
        }
    }
}

/// A rendered browser pixel for `iframe` and `js` answers (SPEC 5.2).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BrowserPixel {
    /// An image URL (macros URL-encoded).
    Image { url: String },
    /// An iframe URL (macros URL-encoded).
    Iframe { url: String },
    /// A script URL (macros URL-encoded).
    Script { url: String },
    /// Inline HTML or script (macros HTML-escaped).
    Html { html: String },
}

/// The answer to a conversion; serialises to the `s2s` JSON of SPEC 2.3
/// (`browser_pixels` is skipped there and used for `iframe`/`js` answers).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConversionOutcome {
    pub status: OutcomeStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversion_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub click_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revenue: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(skip)]
    pub browser_pixels: Vec<BrowserPixel>,
}

impl ConversionOutcome {
    /// An answer with only a status and a reason (refusals).
    pub fn refused(status: OutcomeStatus, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: Some(reason.into()),
            conversion_id: None,
            click_id: None,
            payout: None,
            revenue: None,
            currency: None,
            browser_pixels: Vec::new(),
        }
    }

    /// The answer to a conversion that could not be made durable (the shard is gone, its
    /// log cannot write, or its batch's sync failed): senders retry on it.
    pub fn unavailable() -> Self {
        Self::refused(OutcomeStatus::Unavailable, "storage unavailable")
    }
}

/// Why an admin change or lookup failed; the server maps these to 400/404/503.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    #[error("not found")]
    NotFound,
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// Delivery states for `GET /deliveries?state=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

/// `GET /conversions` filters. Days are [`crate::clock::Day`]s, inclusive.
#[derive(Clone, Debug, Default)]
pub struct ConversionQuery {
    pub from: Option<crate::clock::Day>,
    pub to: Option<crate::clock::Day>,
    pub campaign_id: Option<u32>,
    pub affiliate_id: Option<u32>,
    pub status: Option<ConversionStatus>,
    /// Opaque, from the previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size; the engine caps it.
    pub limit: usize,
}

/// The dimensions a report can group by (SPEC 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupKey {
    Day,
    Campaign,
    Affiliate,
    Creative,
    Sid1,
}

impl GroupKey {
    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "day" => Some(Self::Day),
            "campaign" => Some(Self::Campaign),
            "affiliate" => Some(Self::Affiliate),
            "creative" => Some(Self::Creative),
            "sid1" => Some(Self::Sid1),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ReportQuery {
    pub from: crate::clock::Day,
    pub to: crate::clock::Day,
    pub group_by: Vec<GroupKey>,
}
