//! The catalog's and the engine's configuration types. The TOML file (`[[campaigns]]`,
//! `[[affiliates]]`, `[[webhooks]]`, `[storage]`, `[dispatch]`) and the admin API's JSON use
//! these same types and field names (SPEC section 9). Every field has a default; unknown
//! fields are an error naming the field (`deny_unknown_fields`).

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CampaignStatus {
    #[default]
    Active,
    Paused,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AffiliateStatus {
    #[default]
    Active,
    Blocked,
}

/// A conversion's approval state, as the advertiser reports it (`Status`) or an admin sets it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConversionStatus {
    #[default]
    Approved,
    Pending,
    Rejected,
}

impl ConversionStatus {
    /// Parses the wire value, ignoring ASCII case.
    pub fn parse(value: &str) -> Option<Self> {
        [Self::Approved, Self::Pending, Self::Rejected]
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(value))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Pending => "pending",
            Self::Rejected => "rejected",
        }
    }
}

/// An advertiser's offer (`CID`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Campaign {
    pub id: u32,
    pub name: String,
    pub status: CampaignStatus,
    /// Where clicks go; macros of SPEC 5.3 are substituted and URL-encoded.
    pub landing_url: String,
    pub cookie_life_days: u32,
    pub unique_window_hours: u32,
    pub ip_backup: bool,
    pub backup_window_hours: u32,
    /// What the advertiser pays per conversion.
    pub revenue: f64,
    /// What the affiliate earns per conversion (fixed), unless `payout_percent > 0`.
    pub payout: f64,
    /// When above zero, payout is this percent of the conversion's `TotalSales`.
    pub payout_percent: f64,
    pub currency: String,
    pub multiple_conversions: bool,
    pub allow_afid_posts: bool,
    pub allow_custom_params: bool,
    pub dedupe_merchant_ref: bool,
    /// Required on server posts when not empty.
    pub postback_token: String,
    /// CIDRs allowed to send server posts; empty allows any address.
    pub postback_ips: Vec<IpNet>,
    pub propagate_extras: bool,
}

impl Default for Campaign {
    fn default() -> Self {
        Self {
            id: 0,
            name: String::new(),
            status: CampaignStatus::Active,
            landing_url: String::new(),
            cookie_life_days: 30,
            unique_window_hours: 24,
            ip_backup: true,
            backup_window_hours: 24,
            revenue: 0.0,
            payout: 0.0,
            payout_percent: 0.0,
            currency: "USD".to_string(),
            multiple_conversions: false,
            allow_afid_posts: true,
            allow_custom_params: false,
            dedupe_merchant_ref: false,
            postback_token: String::new(),
            postback_ips: Vec::new(),
            propagate_extras: false,
        }
    }
}

/// A publisher who sends traffic (`AFID`), with the pixels that hear of its conversions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Affiliate {
    pub id: u32,
    pub name: String,
    pub status: AffiliateStatus,
    pub pixels: Vec<Pixel>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelKind {
    /// Fired by the dispatcher, server to server.
    #[default]
    Server,
    /// Returned inside `iframe` and `js` conversion answers as an `<img>`.
    Image,
    /// Returned inside `iframe` and `js` conversion answers as an `<iframe>` or HTML.
    Iframe,
    /// Returned inside `iframe` and `js` conversion answers as a script.
    Js,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Get,
    /// POST with a JSON body describing the conversion.
    Post,
}

/// An affiliate's pixel: campaign-level when `campaign` is set, else the affiliate's global one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pixel {
    pub campaign: Option<u32>,
    pub kind: PixelKind,
    /// The URL template (server and image pixels, and iframe/js pixels given by URL).
    pub url: String,
    /// The HTML or script template for iframe/js pixels given inline.
    pub html: String,
    pub method: HttpMethod,
    pub fire_on: Vec<ConversionStatus>,
}

impl Default for Pixel {
    fn default() -> Self {
        Self {
            campaign: None,
            kind: PixelKind::Server,
            url: String::new(),
            html: String::new(),
            method: HttpMethod::Get,
            fire_on: vec![ConversionStatus::Approved],
        }
    }
}

/// A network-wide third-party URL that hears of every counted conversion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Webhook {
    pub id: u32,
    pub url: String,
    /// `whsec_<base64>`: signs POST bodies per Standard Webhooks. Empty: unsigned.
    pub secret: String,
    pub method: HttpMethod,
    pub fire_on: Vec<ConversionStatus>,
}

impl Default for Webhook {
    fn default() -> Self {
        Self {
            id: 0,
            url: String::new(),
            secret: String::new(),
            // Webhooks carry the conversion as a signed JSON body.
            method: HttpMethod::Post,
            fire_on: vec![ConversionStatus::Approved],
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Group commit: fdatasync before any answer in the batch.
    #[default]
    Always,
    /// Sync every `sync_interval_ms`; a crash loses at most that much.
    Interval,
    /// Leave syncing to the OS.
    Never,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    /// 0 = one per core; may change between restarts.
    pub shards: usize,
    pub sync: SyncMode,
    pub sync_interval_ms: u64,
    /// Size of each preallocated log segment. Smaller segments let snapshots free disk
    /// sooner; larger ones rotate less often.
    pub segment_size_bytes: u64,
    /// Records a shard appends between snapshots (at least as many as the items the shard
    /// holds: a snapshot writes them all). A snapshot bounds recovery time and lets old
    /// segments and expired clicks go.
    pub snapshot_every_records: u64,
    /// Records a compaction replays onto its rebuilt state per batch of the shard, while
    /// it catches up with what came during its snapshot: at about 0.3 µs a record, the
    /// default holds a batch at most ~2.5 ms. Lower trades a longer catch-up (with the
    /// old and the new state both in memory) for shorter holds.
    pub compaction_catch_up_records: usize,
    /// Start-up only (`clicktrail serve --repair`, never from a file): recover past a
    /// checksum failure by dropping the damaged records, logging exactly what was dropped,
    /// instead of refusing to start.
    #[serde(skip)]
    pub repair: bool,
}

/// Smallest accepted `segment_size_bytes`: a segment must hold the largest record.
pub const MIN_SEGMENT_BYTES: u64 = 2 << 20;

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("clicktrail-data"),
            shards: 0,
            sync: SyncMode::Always,
            sync_interval_ms: 5,
            segment_size_bytes: 64 << 20,
            snapshot_every_records: 1_000_000,
            compaction_catch_up_records: 8192,
            repair: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// Lets pixels and webhooks reach loopback and private addresses (tests, intranets).
    pub allow_private_targets: bool,
    /// Each entry is the delay before the next retry, with ±10 % jitter.
    pub retry_schedule_secs: Vec<u64>,
    /// Total time allowed for one attempt.
    pub timeout_ms: u64,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            retry_schedule_secs: vec![30, 120, 600, 1800, 3600, 7200, 14400, 28800, 43200, 86400],
            timeout_ms: 10_000,
        }
    }
}
