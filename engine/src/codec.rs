//! Every byte format the engine writes, in one place: WAL record kinds and payloads, and
//! snapshot blobs. Payloads are bincode 2 (serde mode, standard config).
//!
//! Versioning: the WAL record `kind` byte names the payload format (`KIND_SHARD_V1`,
//! `KIND_CONTROL_V1`), and every snapshot blob starts with a format byte. A new format gets
//! a new number and a decoder here; old numbers stay readable. Catalog entries (campaigns,
//! affiliates, webhooks) are stored as JSON text inside the bincode payload, so their
//! `#[serde(default)]` fields let the catalog grow without a new format.

use crate::api::{DeliveryState, PixelType};
use crate::config::{ConversionStatus, HttpMethod};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io;
use std::net::IpAddr;

mod text;
pub use text::{phrase, AuditLine, ShortText};

/// WAL kind of a shard record ([`ShardRecord`], format 1).
pub const KIND_SHARD_V1: u8 = 1;
/// WAL kind of a control-log record ([`ControlRecord`], format 1).
pub const KIND_CONTROL_V1: u8 = 2;
/// First byte of a shard snapshot blob ([`ShardSnapshot`], format 1).
pub const SNAPSHOT_SHARD_V1: u8 = 1;
/// First byte of a control snapshot blob ([`ControlSnapshot`], format 1).
pub const SNAPSHOT_CONTROL_V1: u8 = 2;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode {what}: {reason}")]
pub struct DecodeError {
    pub what: &'static str,
    pub reason: String,
}

/// A click as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClickRec {
    pub id: [u8; 16],
    pub time_ms: u64,
    pub campaign_id: u32,
    pub affiliate_id: u32,
    pub creative_id: Option<u32>,
    pub sub_ids: Vec<String>,
    pub extras: Vec<(String, String)>,
    pub ip: IpAddr,
    pub fingerprint: u64,
    pub unique: bool,
}

/// A click record read in place from its payload: the strings borrow the log's bytes, so
/// recovery interns a click's tail without allocating it (see [`decode_shard_click`]).
/// Field for field [`ClickRec`].
#[derive(Debug, PartialEq)]
pub struct ClickRecRef<'a> {
    pub id: [u8; 16],
    pub time_ms: u64,
    pub campaign_id: u32,
    pub affiliate_id: u32,
    pub creative_id: Option<u32>,
    pub sub_ids: Vec<&'a str>,
    pub extras: Vec<(&'a str, &'a str)>,
    pub ip: IpAddr,
    pub fingerprint: u64,
    pub unique: bool,
}

/// An impression as counted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImpressionRec {
    pub time_ms: u64,
    pub campaign_id: u32,
    pub affiliate_id: u32,
    pub creative_id: Option<u32>,
    pub sid1: String,
    pub fingerprint: u64,
    pub unique: bool,
}

/// How a conversion was matched (SPEC 2.3's attribution order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchedBy {
    ClickId,
    Cookie,
    IpBackup,
    Afid,
    Unattributed,
}

impl MatchedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClickId => "click_id",
            Self::Cookie => "cookie",
            Self::IpBackup => "ip_backup",
            Self::Afid => "afid",
            Self::Unattributed => "unattributed",
        }
    }
}

/// Who a delivery goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryTarget {
    AffiliatePixel { affiliate_id: u32 },
    Webhook { webhook_id: u32 },
}

/// One attempt of a delivery, as the dispatcher reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRec {
    pub attempt: u32,
    pub started_ms: u64,
    pub latency_ms: u64,
    /// HTTP status or error class.
    pub result: String,
}

/// A delivery of the durable outbox, with everything needed to fire it again after a
/// restart (the URL is expanded when the delivery is created).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRec {
    pub seq: u32,
    pub target: DeliveryTarget,
    /// The conversion status this delivery announces.
    pub fired_on: ConversionStatus,
    pub url: String,
    pub method: HttpMethod,
    pub body: Option<Vec<u8>>,
    pub webhook_secret: Option<String>,
    pub state: DeliveryState,
    /// Attempts made since the delivery was created or last replayed.
    pub attempts_made: u32,
    pub next_attempt_ms: u64,
    /// Every attempt ever made, replays included.
    pub attempts: Vec<AttemptRec>,
    pub created_ms: u64,
}

/// A conversion as recorded, duplicates and unattributed ones included.
///
/// Every shard keeps all of its conversions in memory as these, so the text fields are
/// compact ([`ShortText`], [`AuditLine`]) and the lists that never grow are boxed slices
/// (no spare capacity); each serializes exactly as the `String` or `Vec` it replaced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConversionRec {
    pub id: [u8; 16],
    pub time_ms: u64,
    pub click_id: Option<[u8; 16]>,
    pub campaign_id: u32,
    pub affiliate_id: u32,
    pub creative_id: Option<u32>,
    pub sub_ids: Box<[String]>,
    pub extras: Box<[(String, String)]>,
    pub event: ShortText,
    pub merchant_ref: Option<ShortText>,
    pub status: ConversionStatus,
    pub payout_micros: i64,
    pub revenue_micros: i64,
    pub currency: ShortText,
    pub matched_by: MatchedBy,
    pub pixel_type: PixelType,
    /// Not a duplicate and attributed: counts in reports (when not rejected).
    pub counted: bool,
    /// For duplicates: the original conversion.
    pub duplicate_of: Option<[u8; 16]>,
    /// Grows only on a status change (rare), so a boxed slice: no spare capacity.
    pub audit: Box<[AuditLine]>,
    pub deliveries: Vec<DeliveryRec>,
}
// Held in memory for every conversion of a shard (264 bytes with `String`s and `Vec`s).
const _: () = assert!(std::mem::size_of::<ConversionRec>() <= 240);

/// One record of a shard's log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ShardRecord {
    Click(ClickRec),
    Impression(ImpressionRec),
    /// A conversion with its deliveries: one record, so both are durable together.
    Conversion(ConversionRec),
    StatusChange {
        conversion_id: [u8; 16],
        status: ConversionStatus,
        time_ms: u64,
        audit: String,
        deliveries: Vec<DeliveryRec>,
    },
    Attempt {
        conversion_id: [u8; 16],
        seq: u32,
        attempt: AttemptRec,
        state: DeliveryState,
        next_attempt_ms: u64,
    },
    Replay {
        conversion_id: [u8; 16],
        seq: u32,
        time_ms: u64,
    },
}

impl ShardRecord {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Click(_) => "click",
            Self::Impression(_) => "impression",
            Self::Conversion(_) => "conversion",
            Self::StatusChange { .. } => "status_change",
            Self::Attempt { .. } => "attempt",
            Self::Replay { .. } => "replay",
        }
    }
}

/// Catalog sections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CatalogKind {
    Campaign,
    Affiliate,
    Webhook,
}

/// One record of the control log: the catalog, the fingerprint secret, and the
/// resharding protocol's markers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ControlRecord {
    /// The fingerprint key, written once when the data directory is created.
    Secret([u8; 16]),
    /// A catalog entry created or replaced (JSON of the config type).
    Put {
        kind: CatalogKind,
        id: u32,
        json: String,
    },
    Delete {
        kind: CatalogKind,
        id: u32,
    },
    /// The config file's version (hash of its JSON) of an entry, as last applied.
    FileSeen {
        kind: CatalogKind,
        id: u32,
        hash: u64,
    },
    /// Commit point of a shard-count change: the new shards are complete in the staging
    /// directory; finishing means moving them into place.
    ReshardCommitted {
        shards: u32,
    },
    /// The new shards are in place and the old ones gone.
    ReshardDone {
        shards: u32,
    },
}

/// A click in a snapshot, its sub IDs and extras by index into the snapshot's tails.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClickSnap {
    pub id: [u8; 16],
    pub time_ms: u64,
    pub campaign_id: u32,
    pub affiliate_id: u32,
    pub creative_id: Option<u32>,
    pub tail: u32,
    pub ip: IpAddr,
    pub fingerprint: u64,
    pub unique: bool,
}

/// Sub IDs and extras of clicks, interned.
pub type Tail = (Vec<String>, Vec<(String, String)>);

/// The stats key of SPEC 3.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StatKeyRec {
    pub day: u32,
    pub campaign_id: u32,
    pub affiliate_id: u32,
    pub creative_id: Option<u32>,
    pub sid1: String,
}

/// Raw counters (money in micro-units).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersRec {
    pub impressions: u64,
    pub unique_impressions: u64,
    pub clicks: u64,
    pub unique_clicks: u64,
    pub conversions: u64,
    pub approved: u64,
    pub revenue_micros: i64,
    pub payout_micros: i64,
}

impl CountersRec {
    /// Adds `other`. Wrapping on purpose: a shard's counters are a *partial* sum. After a
    /// reshard a counter may live on another shard than the conversions it counts, so a
    /// later status change can take one shard's partial below zero; with wrapping
    /// arithmetic the sum over all shards (what reports show) is still exact.
    pub fn add(&mut self, other: &CountersRec) {
        self.impressions = self.impressions.wrapping_add(other.impressions);
        self.unique_impressions = self
            .unique_impressions
            .wrapping_add(other.unique_impressions);
        self.clicks = self.clicks.wrapping_add(other.clicks);
        self.unique_clicks = self.unique_clicks.wrapping_add(other.unique_clicks);
        self.conversions = self.conversions.wrapping_add(other.conversions);
        self.approved = self.approved.wrapping_add(other.approved);
        self.revenue_micros = self.revenue_micros.wrapping_add(other.revenue_micros);
        self.payout_micros = self.payout_micros.wrapping_add(other.payout_micros);
    }

    /// Subtracts a conversion's contribution (see [`CountersRec::add`] on wrapping).
    pub fn sub_conversions(&mut self, other: &CountersRec) {
        self.conversions = self.conversions.wrapping_sub(other.conversions);
        self.approved = self.approved.wrapping_sub(other.approved);
        self.revenue_micros = self.revenue_micros.wrapping_sub(other.revenue_micros);
        self.payout_micros = self.payout_micros.wrapping_sub(other.payout_micros);
    }
}

/// A shard's whole state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardSnapshot {
    pub clicks: Vec<ClickSnap>,
    pub tails: Vec<Tail>,
    pub conversions: Vec<ConversionRec>,
    /// (fingerprint, campaign) -> time of the last impression, for unique impressions.
    pub impressions: Vec<(u64, u32, u64)>,
    pub counters: Vec<(StatKeyRec, CountersRec)>,
}

/// The control log's whole state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlSnapshot {
    pub secret: Option<[u8; 16]>,
    pub entries: Vec<(CatalogKind, u32, String)>,
    pub file_seen: Vec<(CatalogKind, u32, u64)>,
    pub reshard_committed: Option<u32>,
    pub reshard_done: Option<u32>,
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    // Encoding into a Vec cannot fail for these plain types.
    if let Err(e) = bincode::serde::encode_into_std_write(value, out, config()) {
        debug_assert!(false, "encoding failed: {e}");
    }
}

/// Most bytes a record's payload may claim for its strings and lists while decoding: a
/// record is at most 1 MiB (the WAL's limit), so a larger claim is corruption, refused
/// before any allocation. Snapshots are not limited (they hold a whole shard).
const RECORD_DECODE_LIMIT_BYTES: usize = 16 << 20;

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    decode_with(bytes, what, config())
}

fn decode_record<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    decode_with(
        bytes,
        what,
        config().with_limit::<RECORD_DECODE_LIMIT_BYTES>(),
    )
}

fn decode_with<T: DeserializeOwned, C: bincode::config::Config>(
    bytes: &[u8],
    what: &'static str,
    config: C,
) -> Result<T, DecodeError> {
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, config).map_err(|e| DecodeError {
            what,
            reason: e.to_string(),
        })?;
    if used != bytes.len() {
        return Err(DecodeError {
            what,
            reason: format!("{} trailing bytes", bytes.len() - used),
        });
    }
    Ok(value)
}

/// Encodes a shard record into `out` (cleared first); returns its WAL kind.
pub fn encode_shard_record(record: &ShardRecord, out: &mut Vec<u8>) -> u8 {
    out.clear();
    match record {
        // Nearly every record: written by hand, byte for byte what serde writes.
        ShardRecord::Click(click) => {
            out.push(CLICK_VARIANT_BYTE);
            write_click(click, out);
        }
        ShardRecord::Impression(impression) => {
            out.push(IMPRESSION_VARIANT_BYTE);
            write_impression(impression, out);
        }
        // Written per conversion: serde's generic path was a fifth of a conversion's cost
        // on the shard.
        ShardRecord::Conversion(conversion) => {
            out.push(CONVERSION_VARIANT_BYTE);
            write_conversion(conversion, out);
        }
        other => encode(other, out),
    }
    KIND_SHARD_V1
}

/// Writes bincode 2's standard encoding by hand for the records written per click (the
/// click record, and every click of a snapshot) and per conversion: serde's generic path writes a click ID
/// byte by byte and was a visible share of a click's cost on the shard. The exact inverse
/// of [`Reader`]; the tests compare both with serde.
mod write {
    use std::net::IpAddr;

    /// bincode's varint (see `Reader::varint`).
    pub fn varint(out: &mut Vec<u8>, v: u64) {
        if v < 251 {
            out.push(v as u8);
        } else if let Ok(v) = u16::try_from(v) {
            out.push(251);
            out.extend_from_slice(&v.to_le_bytes());
        } else if let Ok(v) = u32::try_from(v) {
            out.push(252);
            out.extend_from_slice(&v.to_le_bytes());
        } else {
            out.push(253);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    pub fn str(out: &mut Vec<u8>, s: &str) {
        varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
    /// A signed integer: zigzag, then the varint.
    pub fn i64(out: &mut Vec<u8>, v: i64) {
        varint(out, (v << 1 ^ v >> 63) as u64);
    }
    pub fn strs(out: &mut Vec<u8>, items: &[String]) {
        varint(out, items.len() as u64);
        for s in items {
            str(out, s);
        }
    }
    pub fn pairs(out: &mut Vec<u8>, items: &[(String, String)]) {
        varint(out, items.len() as u64);
        for (k, v) in items {
            str(out, k);
            str(out, v);
        }
    }
    pub fn opt_str(out: &mut Vec<u8>, v: Option<&str>) {
        match v {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                str(out, s);
            }
        }
    }
    pub fn opt_id(out: &mut Vec<u8>, v: Option<&[u8; 16]>) {
        match v {
            None => out.push(0),
            Some(id) => {
                out.push(1);
                out.extend_from_slice(id);
            }
        }
    }
    /// A unit variant: its index in the declaration (what serde's derive numbers it).
    pub fn variant(out: &mut Vec<u8>, index: u32) {
        varint(out, u64::from(index));
    }
    pub fn opt_u32(out: &mut Vec<u8>, v: Option<u32>) {
        match v {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                varint(out, u64::from(v));
            }
        }
    }
    /// `IpAddr` as serde writes it to bincode: the variant, then the octets.
    pub fn ip(out: &mut Vec<u8>, ip: &IpAddr) {
        match ip {
            IpAddr::V4(v4) => {
                out.push(0);
                out.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.push(1);
                out.extend_from_slice(&v6.octets());
            }
        }
    }
}

/// A [`ClickRec`]'s fields, as serde would write them (without the record's variant).
fn write_click(c: &ClickRec, out: &mut Vec<u8>) {
    out.extend_from_slice(&c.id);
    write::varint(out, c.time_ms);
    write::varint(out, u64::from(c.campaign_id));
    write::varint(out, u64::from(c.affiliate_id));
    write::opt_u32(out, c.creative_id);
    write::varint(out, c.sub_ids.len() as u64);
    for s in &c.sub_ids {
        write::str(out, s);
    }
    write::varint(out, c.extras.len() as u64);
    for (k, v) in &c.extras {
        write::str(out, k);
        write::str(out, v);
    }
    write::ip(out, &c.ip);
    write::varint(out, c.fingerprint);
    out.push(u8::from(c.unique));
}

/// An [`ImpressionRec`]'s fields, as serde would write them (without the record's variant).
fn write_impression(i: &ImpressionRec, out: &mut Vec<u8>) {
    write::varint(out, i.time_ms);
    write::varint(out, u64::from(i.campaign_id));
    write::varint(out, u64::from(i.affiliate_id));
    write::opt_u32(out, i.creative_id);
    write::str(out, &i.sid1);
    write::varint(out, i.fingerprint);
    out.push(u8::from(i.unique));
}

/// A [`ConversionRec`]'s fields, as serde would write them (without the record's variant).
/// Deliveries (most conversions have none) go through serde.
fn write_conversion(c: &ConversionRec, out: &mut Vec<u8>) {
    out.extend_from_slice(&c.id);
    write::varint(out, c.time_ms);
    write::opt_id(out, c.click_id.as_ref());
    write::varint(out, u64::from(c.campaign_id));
    write::varint(out, u64::from(c.affiliate_id));
    write::opt_u32(out, c.creative_id);
    write::strs(out, &c.sub_ids);
    write::pairs(out, &c.extras);
    write::str(out, &c.event);
    write::opt_str(out, c.merchant_ref.as_deref());
    // Fieldless enums: `as u32` is the declaration index, which serde writes.
    write::variant(out, c.status as u32);
    write::i64(out, c.payout_micros);
    write::i64(out, c.revenue_micros);
    write::str(out, &c.currency);
    write::variant(out, c.matched_by as u32);
    write::variant(out, c.pixel_type as u32);
    out.push(u8::from(c.counted));
    write::opt_id(out, c.duplicate_of.as_ref());
    write::varint(out, c.audit.len() as u64);
    for line in &c.audit {
        line.with_text(|s| write::str(out, s));
    }
    if c.deliveries.is_empty() {
        write::varint(out, 0);
    } else {
        encode(&c.deliveries, out);
    }
}

/// A [`ClickSnap`] as serde would write it.
fn write_click_snap(c: &ClickSnap, out: &mut Vec<u8>) {
    out.extend_from_slice(&c.id);
    write::varint(out, c.time_ms);
    write::varint(out, u64::from(c.campaign_id));
    write::varint(out, u64::from(c.affiliate_id));
    write::opt_u32(out, c.creative_id);
    write::varint(out, u64::from(c.tail));
    write::ip(out, &c.ip);
    write::varint(out, c.fingerprint);
    out.push(u8::from(c.unique));
}

/// Bytes a snapshot's click takes at most (16 ID, 9+5+5+6+5 integers, 17 IP, 9+1), to
/// size the snapshot's buffer once instead of copying it as it doubles.
const CLICK_SNAP_MAX_BYTES: usize = 73;

pub fn decode_shard_record(kind: u8, payload: &[u8]) -> Result<ShardRecord, DecodeError> {
    match kind {
        KIND_SHARD_V1 => decode_record(payload, "shard record"),
        other => Err(DecodeError {
            what: "shard record",
            reason: format!("unknown kind {other}"),
        }),
    }
}

/// [`ShardRecord::Click`]'s variant index as encoded (a varint: one byte).
const CLICK_VARIANT_BYTE: u8 = 0;
/// [`ShardRecord::Impression`]'s variant index.
const IMPRESSION_VARIANT_BYTE: u8 = 1;
/// [`ShardRecord::Conversion`]'s variant index.
const CONVERSION_VARIANT_BYTE: u8 = 2;

/// Reads bincode 2's standard encoding (varint integers, length-prefixed strings) by hand
/// for the one record recovery replays millions of: serde's generic path visits a click
/// ID byte by byte and was the largest share of replay time. Accepts exactly the
/// encodings `ClickRec` is written with; the tests compare it with the serde decoder.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }
    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| b.try_into().ok())
    }
    /// bincode's varint: one byte below 251, else a tag (251: u16, 252: u32, 253: u64)
    /// and the little-endian value; `max_tag` is the widest the field's type allows.
    fn varint(&mut self, max_tag: u8) -> Option<u64> {
        match self.byte()? {
            b if b < 251 => Some(u64::from(b)),
            251 => Some(u64::from(u16::from_le_bytes(self.array()?))),
            252 if max_tag >= 252 => Some(u64::from(u32::from_le_bytes(self.array()?))),
            253 if max_tag >= 253 => Some(u64::from_le_bytes(self.array()?)),
            _ => None,
        }
    }
    fn u32(&mut self) -> Option<u32> {
        self.varint(252).and_then(|v| u32::try_from(v).ok())
    }
    fn u64(&mut self) -> Option<u64> {
        self.varint(253)
    }
    fn len(&mut self) -> Option<usize> {
        // Each item takes at least one byte: a longer claim is damage, refused before
        // reserving anything.
        let n = usize::try_from(self.u64()?).ok()?;
        (n <= self.bytes.len()).then_some(n)
    }
    fn str(&mut self) -> Option<&'a str> {
        let n = self.len()?;
        std::str::from_utf8(self.take(n)?).ok()
    }
    fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
}

fn read_click<'a>(bytes: &'a [u8]) -> Option<ClickRecRef<'a>> {
    let mut r = Reader { bytes };
    let id = r.array::<16>()?;
    let time_ms = r.u64()?;
    let campaign_id = r.u32()?;
    let affiliate_id = r.u32()?;
    let creative_id = match r.byte()? {
        0 => None,
        1 => Some(r.u32()?),
        _ => return None,
    };
    let n = r.len()?;
    let mut sub_ids = Vec::with_capacity(n);
    for _ in 0..n {
        sub_ids.push(r.str()?);
    }
    let n = r.len()?;
    let mut extras = Vec::with_capacity(n);
    for _ in 0..n {
        extras.push((r.str()?, r.str()?));
    }
    let ip = match r.u32()? {
        0 => IpAddr::from(r.array::<4>()?),
        1 => IpAddr::from(r.array::<16>()?),
        _ => return None,
    };
    let fingerprint = r.u64()?;
    let unique = r.bool()?;
    r.bytes.is_empty().then_some(ClickRecRef {
        id,
        time_ms,
        campaign_id,
        affiliate_id,
        creative_id,
        sub_ids,
        extras,
        ip,
        fingerprint,
        unique,
    })
}

/// Whether a shard record is a click (by its first byte; not validated).
pub fn is_shard_click(kind: u8, payload: &[u8]) -> bool {
    kind == KIND_SHARD_V1 && payload.first() == Some(&CLICK_VARIANT_BYTE)
}

/// Recovery's fast path: a shard record that is a click, decoded in place (no string is
/// copied); `Ok(None)` for any other record, which [`decode_shard_record`] then decodes.
pub fn decode_shard_click(
    kind: u8,
    payload: &[u8],
) -> Result<Option<ClickRecRef<'_>>, DecodeError> {
    const WHAT: &str = "shard record";
    match (kind, payload.split_first()) {
        (KIND_SHARD_V1, Some((&CLICK_VARIANT_BYTE, rest))) => match read_click(rest) {
            Some(click) => Ok(Some(click)),
            None => Err(DecodeError {
                what: WHAT,
                reason: "malformed click".into(),
            }),
        },
        _ => Ok(None),
    }
}

pub fn encode_control_record(record: &ControlRecord) -> (u8, Vec<u8>) {
    let mut out = Vec::new();
    encode(record, &mut out);
    (KIND_CONTROL_V1, out)
}

pub fn decode_control_record(kind: u8, payload: &[u8]) -> Result<ControlRecord, DecodeError> {
    match kind {
        KIND_CONTROL_V1 => decode_record(payload, "control record"),
        other => Err(DecodeError {
            what: "control record",
            reason: format!("unknown kind {other}"),
        }),
    }
}

pub fn encode_shard_snapshot(snapshot: &ShardSnapshot) -> Vec<u8> {
    let ShardSnapshot {
        clicks,
        tails,
        conversions,
        impressions,
        counters,
    } = snapshot;
    encode_shard_snapshot_parts(clicks, tails, conversions, impressions, counters)
}

/// [`encode_shard_snapshot`] from the snapshot's fields, with the tails and conversions by
/// value or by reference: serde writes a `&T` as the `T`, so the bytes are the same. A snapshot's
/// thread encodes the conversions of the frozen state it borrows this way; cloning them
/// into a [`ShardSnapshot`] first copied every string of every conversion, the larger part
/// of a snapshot's CPU once a shard holds hundreds of thousands of conversions.
pub fn encode_shard_snapshot_parts<T: Serialize, C: std::borrow::Borrow<ConversionRec>>(
    clicks: &[ClickSnap],
    tails: &[T],
    conversions: &[C],
    impressions: &[(u64, u32, u64)],
    counters: &[(StatKeyRec, CountersRec)],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + clicks.len() * CLICK_SNAP_MAX_BYTES);
    // Writing into a Vec cannot fail.
    if let Err(e) =
        write_shard_snapshot_parts(&mut out, clicks, tails, conversions, impressions, counters)
    {
        debug_assert!(false, "encoding failed: {e}");
    }
    out
}

/// Bytes of a snapshot's clicks encoded before they go to the writer in one write.
const SNAPSHOT_WRITE_CHUNK_BYTES: usize = 1 << 20;

/// [`encode_shard_snapshot_parts`] into a writer: a snapshot's thread streams it into the
/// file instead of holding the whole encoding in memory (as large as the file: 115 MB for
/// 2 M records). The writer takes serde's field-sized writes as they come (the log's
/// snapshot writer gathers them; a `Vec` just grows).
pub fn write_shard_snapshot_parts<T: Serialize, C: std::borrow::Borrow<ConversionRec>>(
    mut out: &mut dyn io::Write,
    clicks: &[ClickSnap],
    tails: &[T],
    conversions: &[C],
    impressions: &[(u64, u32, u64)],
    counters: &[(StatKeyRec, CountersRec)],
) -> io::Result<()> {
    let mut chunk = Vec::with_capacity(SNAPSHOT_WRITE_CHUNK_BYTES + CLICK_SNAP_MAX_BYTES);
    chunk.push(SNAPSHOT_SHARD_V1);
    // bincode writes a struct as its fields one after another: the clicks (nearly all of
    // it) by hand, the rest through serde, field by field in declaration order.
    write::varint(&mut chunk, clicks.len() as u64);
    for c in clicks {
        write_click_snap(c, &mut chunk);
        if chunk.len() >= SNAPSHOT_WRITE_CHUNK_BYTES {
            out.write_all(&chunk)?;
            chunk.clear();
        }
    }
    out.write_all(&chunk)?;
    chunk.clear();
    let serde_err = |e: bincode::error::EncodeError| io::Error::other(e.to_string());
    bincode::serde::encode_into_std_write(tails, &mut out, config()).map_err(serde_err)?;
    // By hand too, as the log writes them: a shard may hold millions, and serde's generic
    // path took 131 ms for 500 k server-to-server conversions against 90 (a scratch test).
    write::varint(&mut chunk, conversions.len() as u64);
    for c in conversions {
        write_conversion(c.borrow(), &mut chunk);
        if chunk.len() >= SNAPSHOT_WRITE_CHUNK_BYTES {
            out.write_all(&chunk)?;
            chunk.clear();
        }
    }
    out.write_all(&chunk)?;
    bincode::serde::encode_into_std_write(impressions, &mut out, config()).map_err(serde_err)?;
    bincode::serde::encode_into_std_write(counters, &mut out, config()).map_err(serde_err)?;
    Ok(())
}

pub fn decode_shard_snapshot(data: &[u8]) -> Result<ShardSnapshot, DecodeError> {
    match data.split_first() {
        Some((&SNAPSHOT_SHARD_V1, rest)) => decode(rest, "shard snapshot"),
        _ => Err(DecodeError {
            what: "shard snapshot",
            reason: "unknown format byte".into(),
        }),
    }
}

pub fn encode_control_snapshot(snapshot: &ControlSnapshot) -> Vec<u8> {
    let mut out = vec![SNAPSHOT_CONTROL_V1];
    encode(snapshot, &mut out);
    out
}

pub fn decode_control_snapshot(data: &[u8]) -> Result<ControlSnapshot, DecodeError> {
    match data.split_first() {
        Some((&SNAPSHOT_CONTROL_V1, rest)) => decode(rest, "control snapshot"),
        _ => Err(DecodeError {
            what: "control snapshot",
            reason: "unknown format byte".into(),
        }),
    }
}

/// Decodes any record of a data directory to JSON for `clicktrail wal dump`.
pub fn record_to_json(kind: u8, payload: &[u8]) -> serde_json::Value {
    let decoded = match kind {
        KIND_SHARD_V1 => decode_shard_record(kind, payload).map(|r| {
            let mut data = serde_json::to_value(&r).unwrap_or_default();
            readable_ids(&mut data);
            serde_json::json!({ "type": r.name(), "data": data })
        }),
        KIND_CONTROL_V1 => decode_control_record(kind, payload).map(|r| match r {
            // The fingerprint key never leaves the data directory: a dump is often pasted
            // into tickets, and the key would let anyone link visitors' fingerprints.
            ControlRecord::Secret(_) => serde_json::json!({ "Secret": "<redacted>" }),
            other => serde_json::to_value(&other).unwrap_or_default(),
        }),
        other => Err(DecodeError {
            what: "record",
            reason: format!("unknown kind {other}"),
        }),
    };
    decoded.unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
}

/// Shows 16-byte IDs (`id`, `click_id`, `conversion_id`, `duplicate_of`) in their text
/// form instead of arrays of numbers.
fn readable_ids(value: &mut serde_json::Value) {
    const ID_FIELDS: [&str; 4] = ["id", "click_id", "conversion_id", "duplicate_of"];
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let as_id = v.as_array().filter(|a| a.len() == 16).and_then(|a| {
                    let mut bytes = [0u8; 16];
                    for (b, n) in bytes.iter_mut().zip(a) {
                        *b = u8::try_from(n.as_u64()?).ok()?;
                    }
                    Some(crate::ids::Id(bytes).to_string())
                });
                match as_id {
                    Some(text) if ID_FIELDS.contains(&key.as_str()) => {
                        *v = serde_json::Value::String(text)
                    }
                    _ => readable_ids(v),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(readable_ids),
        _ => {}
    }
}

/// Decodes a snapshot blob to a short JSON summary for `clicktrail wal dump`.
pub fn snapshot_summary(data: &[u8]) -> serde_json::Value {
    if let Ok(s) = decode_shard_snapshot(data) {
        return serde_json::json!({
            "type": "shard_snapshot",
            "clicks": s.clicks.len(),
            "conversions": s.conversions.len(),
            "counters": s.counters.len(),
        });
    }
    match decode_control_snapshot(data) {
        Ok(s) => serde_json::json!({
            "type": "control_snapshot",
            "entries": s.entries.len(),
        }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// An integer at or just below one of bincode's varint width boundaries, capped at
    /// `max`.
    fn varint_edge(rng: &mut rand::rngs::StdRng, max: u64) -> u64 {
        const WIDTHS: [u64; 7] = [0, 250, 251, 65_535, 65_536, u32::MAX as u64, u64::MAX];
        let w = WIDTHS[rng.random_range(0..WIDTHS.len())].min(max);
        w.saturating_sub(rng.random_range(0..2))
    }

    /// The hand-written click reader against serde's, on random clicks (every integer
    /// width bincode's varint has, both IP families, empty and non-ASCII strings), and on
    /// every truncation of each: the same click, or both refuse.
    #[test]
    fn click_reader_agrees_with_serde() {
        let seed = crate::test_seed::seed();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..500 {
            let mut int = |max: u64| varint_edge(&mut rng, max);
            let (time_ms, campaign_id, affiliate_id, creative, fingerprint) = (
                int(u64::MAX),
                int(u64::from(u32::MAX)) as u32,
                int(u64::from(u32::MAX)) as u32,
                int(u64::from(u32::MAX)) as u32,
                int(u64::MAX),
            );
            let text = |rng: &mut rand::rngs::StdRng| -> String {
                let len = [0usize, 1, 7, 300][rng.random_range(0..4)];
                (0..len)
                    .map(|i| if i % 5 == 0 { 'é' } else { 'x' })
                    .collect()
            };
            let rec = ClickRec {
                id: rng.random(),
                time_ms,
                campaign_id,
                affiliate_id,
                creative_id: rng.random_bool(0.5).then_some(creative),
                sub_ids: (0..rng.random_range(0..4))
                    .map(|_| text(&mut rng))
                    .collect(),
                extras: (0..rng.random_range(0..3))
                    .map(|_| (text(&mut rng), text(&mut rng)))
                    .collect(),
                ip: if rng.random_bool(0.5) {
                    IpAddr::from(rng.random::<[u8; 4]>())
                } else {
                    IpAddr::from(rng.random::<[u8; 16]>())
                },
                fingerprint,
                unique: rng.random_bool(0.5),
            };
            let mut buf = Vec::new();
            let kind = encode_shard_record(&ShardRecord::Click(rec.clone()), &mut buf);
            let mut by_serde = Vec::new();
            encode(&ShardRecord::Click(rec.clone()), &mut by_serde);
            assert_eq!(buf, by_serde, "seed {seed}: the hand-written encoder");
            let read = decode_shard_click(kind, &buf)
                .expect("reads")
                .expect("a click");
            let as_owned = ClickRec {
                id: read.id,
                time_ms: read.time_ms,
                campaign_id: read.campaign_id,
                affiliate_id: read.affiliate_id,
                creative_id: read.creative_id,
                sub_ids: read.sub_ids.iter().map(|s| s.to_string()).collect(),
                extras: read
                    .extras
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ip: read.ip,
                fingerprint: read.fingerprint,
                unique: read.unique,
            };
            assert_eq!(as_owned, rec, "seed {seed}");
            for cut in 1..buf.len() {
                let short = &buf[..cut];
                assert_eq!(
                    decode_shard_click(kind, short).is_err(),
                    decode_shard_record(kind, short).is_err(),
                    "seed {seed}, cut at {cut}"
                );
            }
        }
    }

    /// [`ConversionRec`] as it was declared before its text became compact (`String`s and
    /// `Vec`s): the format of every conversion already in a log or a snapshot.
    #[derive(Serialize)]
    struct StringConversionRec {
        id: [u8; 16],
        time_ms: u64,
        click_id: Option<[u8; 16]>,
        campaign_id: u32,
        affiliate_id: u32,
        creative_id: Option<u32>,
        sub_ids: Vec<String>,
        extras: Vec<(String, String)>,
        event: String,
        merchant_ref: Option<String>,
        status: ConversionStatus,
        payout_micros: i64,
        revenue_micros: i64,
        currency: String,
        matched_by: MatchedBy,
        pixel_type: PixelType,
        counted: bool,
        duplicate_of: Option<[u8; 16]>,
        audit: Vec<String>,
        deliveries: Vec<DeliveryRec>,
    }

    /// The same record with the compact types, every text converted as the shard does.
    fn compact(c: &StringConversionRec) -> ConversionRec {
        ConversionRec {
            id: c.id,
            time_ms: c.time_ms,
            click_id: c.click_id,
            campaign_id: c.campaign_id,
            affiliate_id: c.affiliate_id,
            creative_id: c.creative_id,
            sub_ids: c.sub_ids.clone().into_boxed_slice(),
            extras: c.extras.clone().into_boxed_slice(),
            event: ShortText::from(c.event.as_str()),
            merchant_ref: c.merchant_ref.as_deref().map(ShortText::from),
            status: c.status,
            payout_micros: c.payout_micros,
            revenue_micros: c.revenue_micros,
            currency: ShortText::from(c.currency.clone()),
            matched_by: c.matched_by,
            pixel_type: c.pixel_type,
            counted: c.counted,
            duplicate_of: c.duplicate_of,
            audit: c
                .audit
                .iter()
                .map(|l| AuditLine::from(l.as_str()))
                .collect(),
            deliveries: c.deliveries.clone(),
        }
    }

    const MATCHES: [MatchedBy; 5] = [
        MatchedBy::ClickId,
        MatchedBy::Cookie,
        MatchedBy::IpBackup,
        MatchedBy::Afid,
        MatchedBy::Unattributed,
    ];

    /// An audit line as conversions hold them: a fixed phrase, a match line, a near miss of
    /// either (stored as text), or any text.
    fn audit_text(rng: &mut rand::rngs::StdRng, any: String) -> String {
        let id = crate::ids::Id(rng.random());
        let rule = MATCHES[rng.random_range(0..MATCHES.len())].as_str();
        match rng.random_range(0..6) {
            0 => phrase::ALL[rng.random_range(0..phrase::ALL.len())].to_string(),
            1 => format!("matched by {rule} to click {id}"),
            2 => format!("matched by {rule} to click {id} "),
            3 => format!("matched by {rule}x to click {id}"),
            4 => format!("{} ", phrase::ALL[rng.random_range(0..phrase::ALL.len())]),
            _ => any,
        }
    }

    /// A random conversion as the shard held them before its text became compact: every
    /// integer width (negative money too), every status, match and pixel type, present and
    /// absent options, texts around `ShortText`'s inline limit, audit lines of every kind,
    /// with and without deliveries.
    fn random_string_conversion(rng: &mut rand::rngs::StdRng) -> StringConversionRec {
        let statuses = [
            ConversionStatus::Approved,
            ConversionStatus::Pending,
            ConversionStatus::Rejected,
        ];
        let pixels = [
            PixelType::Img,
            PixelType::Iframe,
            PixelType::Js,
            PixelType::S2s,
        ];
        let mut int = |max: u64| varint_edge(rng, max);
        let (time_ms, campaign_id, affiliate_id, creative) = (
            int(u64::MAX),
            int(u64::from(u32::MAX)) as u32,
            int(u64::from(u32::MAX)) as u32,
            int(u64::from(u32::MAX)) as u32,
        );
        let (payout, revenue) = (int(u64::MAX) as i64, int(u64::MAX) as i64);
        // Lengths in bytes around the inline limit of `ShortText` (22), in ASCII and
        // in two-byte characters.
        let text = |rng: &mut rand::rngs::StdRng| -> String {
            let len = [0usize, 1, 3, 7, 21, 22, 23, 300][rng.random_range(0..8)];
            if rng.random_bool(0.5) {
                "x".repeat(len)
            } else {
                "é".repeat(len / 2 + 1)
            }
        };
        let texts = |rng: &mut rand::rngs::StdRng, n: usize| -> Vec<String> {
            (0..rng.random_range(0..n)).map(|_| text(rng)).collect()
        };
        let deliveries = (0..rng.random_range(0..3u32))
            .map(|seq| DeliveryRec {
                seq,
                target: DeliveryTarget::Webhook { webhook_id: seq },
                fired_on: statuses[seq as usize % 3],
                url: text(rng),
                method: HttpMethod::Post,
                body: Some(vec![1, 2, 3]),
                webhook_secret: None,
                state: DeliveryState::Pending,
                attempts_made: 0,
                next_attempt_ms: time_ms,
                attempts: Vec::new(),
                created_ms: time_ms,
            })
            .collect();
        StringConversionRec {
            id: rng.random(),
            time_ms,
            click_id: rng.random_bool(0.5).then(|| rng.random()),
            campaign_id,
            affiliate_id,
            creative_id: rng.random_bool(0.5).then_some(creative),
            sub_ids: texts(rng, 4),
            extras: (0..rng.random_range(0..3))
                .map(|_| (text(rng), text(rng)))
                .collect(),
            event: text(rng),
            merchant_ref: rng.random_bool(0.5).then(|| text(rng)),
            status: statuses[rng.random_range(0..statuses.len())],
            payout_micros: if rng.random_bool(0.5) {
                payout
            } else {
                -payout
            },
            revenue_micros: if rng.random_bool(0.5) {
                revenue
            } else {
                revenue.wrapping_neg()
            },
            currency: text(rng),
            matched_by: MATCHES[rng.random_range(0..MATCHES.len())],
            pixel_type: pixels[rng.random_range(0..pixels.len())],
            counted: rng.random_bool(0.5),
            duplicate_of: rng.random_bool(0.5).then(|| rng.random()),
            audit: (0..rng.random_range(0..5))
                .map(|_| {
                    let any = text(rng);
                    audit_text(rng, any)
                })
                .collect(),
            deliveries,
        }
    }

    /// Conversions encode byte for byte as they did with `String` and `Vec` fields (so
    /// every log and snapshot written before still reads, and old readers read new ones),
    /// through the hand-written encoder (the log) and serde (snapshots) alike, and decode
    /// back to the same record; for random conversions: every integer width (negative
    /// money too), every status, match and pixel type, present and absent options, texts
    /// on both sides of the inline limit, fixed audit phrases, match lines and near misses
    /// of both, with and without deliveries.
    #[test]
    fn conversion_encodes_as_with_string_fields() {
        let seed = crate::test_seed::seed();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..500 {
            let old = random_string_conversion(&mut rng);
            let rec = compact(&old);
            let mut old_bytes = vec![CONVERSION_VARIANT_BYTE];
            encode(&old, &mut old_bytes);
            let mut serde_bytes = vec![CONVERSION_VARIANT_BYTE];
            encode(&rec, &mut serde_bytes);
            assert_eq!(serde_bytes, old_bytes, "seed {seed}: serde, {rec:?}");
            check_encodes_as_serde(&ShardRecord::Conversion(rec), seed);
        }
    }

    /// Audit lines keep their text whatever their form, and the shard's fixed phrases and
    /// match lines (live, or read back from a log) are stored without a heap block.
    #[test]
    fn audit_lines_keep_their_text() {
        let click = crate::ids::Id([7; 16]);
        let matched = format!("matched by cookie to click {click}");
        let cases: [(&str, bool); 7] = [
            (phrase::REVENUE_FROM_CAMPAIGN, true),
            (phrase::CURRENCY_IGNORED, true),
            (&matched, true),
            ("revenue fixed by the campaign.", false),
            (&matched[..matched.len() - 1], false),
            ("matched by cookie to click ", false),
            ("", false),
        ];
        for (text, compact) in cases {
            let line = AuditLine::from(text);
            assert_eq!(line.to_string(), text);
            assert_eq!(
                !matches!(line, AuditLine::Text(_)),
                compact,
                "{text:?} is stored as {line:?}"
            );
            let mut bytes = Vec::new();
            encode(&line, &mut bytes);
            let mut as_string = Vec::new();
            encode(text, &mut as_string);
            assert_eq!(bytes, as_string, "{text:?}");
            let read: AuditLine = decode(&bytes, "audit line").expect("decodes");
            assert_eq!(read, line);
            assert_eq!(
                std::mem::discriminant(&read),
                std::mem::discriminant(&line),
                "{text:?} read back"
            );
        }
        let live = AuditLine::Matched {
            by: MatchedBy::Cookie,
            click: click.0,
        };
        assert_eq!(live.to_string(), matched);
    }

    /// A record's hand-written encoding is serde's, byte for byte, and decodes back to it.
    fn check_encodes_as_serde(record: &ShardRecord, seed: u64) {
        let mut buf = Vec::new();
        let kind = encode_shard_record(record, &mut buf);
        let mut by_serde = Vec::new();
        encode(record, &mut by_serde);
        assert_eq!(buf, by_serde, "seed {seed}: {record:?}");
        let read = decode_shard_record(kind, &buf).expect("reads");
        assert_eq!(&read, record, "seed {seed}");
    }

    /// The hand-written impression encoder writes exactly serde's bytes, for random
    /// impressions of every integer width.
    #[test]
    fn impression_encoder_agrees_with_serde() {
        let seed = crate::test_seed::seed();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..500 {
            let mut int = |max: u64| varint_edge(&mut rng, max);
            let rec = ImpressionRec {
                time_ms: int(u64::MAX),
                campaign_id: int(u64::from(u32::MAX)) as u32,
                affiliate_id: int(u64::from(u32::MAX)) as u32,
                creative_id: Some(int(u64::from(u32::MAX)) as u32),
                sid1: "é".repeat(int(300) as usize % 301),
                fingerprint: int(u64::MAX),
                unique: rng.random_bool(0.5),
            };
            let rec = ImpressionRec {
                creative_id: rec.creative_id.filter(|_| rng.random_bool(0.5)),
                ..rec
            };
            check_encodes_as_serde(&ShardRecord::Impression(rec), seed);
        }
    }

    /// The hand-written snapshot encoder writes exactly serde's bytes (so snapshots written
    /// before it still read, and after it still read with serde), for random clicks of
    /// every integer width and both IP families and random conversions, with the rest of a
    /// snapshot around them.
    #[test]
    fn snapshot_encoder_agrees_with_serde() {
        let seed = crate::test_seed::seed();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for n in [0usize, 1, 2, 300] {
            let mut int = |max: u64| varint_edge(&mut rng, max);
            let clicks: Vec<ClickSnap> = (0..n)
                .map(|_| ClickSnap {
                    id: [int(255) as u8; 16],
                    time_ms: int(u64::MAX),
                    campaign_id: int(u64::from(u32::MAX)) as u32,
                    affiliate_id: int(u64::from(u32::MAX)) as u32,
                    creative_id: (int(1) == 1).then(|| int(u64::from(u32::MAX)) as u32),
                    tail: int(u64::from(u32::MAX)) as u32,
                    ip: if int(1) == 1 {
                        IpAddr::from([int(255) as u8; 4])
                    } else {
                        IpAddr::from([int(255) as u8; 16])
                    },
                    fingerprint: int(u64::MAX),
                    unique: int(1) == 1,
                })
                .collect();
            let conversions = (0..n.min(40))
                .map(|_| compact(&random_string_conversion(&mut rng)))
                .collect();
            let snapshot = ShardSnapshot {
                clicks,
                tails: vec![(vec!["a".into()], vec![("k".into(), "é".into())])],
                conversions,
                impressions: vec![(1, 2, 3)],
                counters: vec![(
                    StatKeyRec {
                        day: 20_000,
                        campaign_id: 1,
                        affiliate_id: 2,
                        creative_id: None,
                        sid1: "s".into(),
                    },
                    CountersRec {
                        clicks: 300,
                        payout_micros: -5,
                        ..CountersRec::default()
                    },
                )],
            };
            let mut by_serde = vec![SNAPSHOT_SHARD_V1];
            encode(&snapshot, &mut by_serde);
            let bytes = encode_shard_snapshot(&snapshot);
            assert_eq!(bytes, by_serde, "seed {seed}: {n} clicks");
            assert_eq!(
                decode_shard_snapshot(&bytes).expect("decodes"),
                snapshot,
                "seed {seed}"
            );
        }
    }

    #[test]
    fn dumps_never_show_the_fingerprint_key() {
        let (kind, payload) = encode_control_record(&ControlRecord::Secret([0xAB; 16]));
        let json = record_to_json(kind, &payload).to_string();
        assert_eq!(json, r#"{"Secret":"<redacted>"}"#);
    }

    #[test]
    fn records_round_trip_and_reject_garbage() {
        let rec = ShardRecord::Click(ClickRec {
            id: [1; 16],
            time_ms: 5,
            campaign_id: 1,
            affiliate_id: 2,
            creative_id: Some(3),
            sub_ids: vec!["a".into()],
            extras: vec![("k".into(), "v".into())],
            ip: "10.1.2.3".parse().expect("ip"),
            fingerprint: 99,
            unique: true,
        });
        let mut buf = Vec::new();
        let kind = encode_shard_record(&rec, &mut buf);
        assert_eq!(decode_shard_record(kind, &buf).expect("decodes"), rec);
        assert!(decode_shard_record(kind, &buf[..buf.len() - 1]).is_err());
        assert!(decode_shard_record(99, &buf).is_err());
        let mut longer = buf.clone();
        longer.push(0);
        assert!(decode_shard_record(kind, &longer).is_err());
        // The in-place click decoder reads the same bytes as the owned one, refuses the
        // same damage, and leaves other records to the owned decoder.
        let ShardRecord::Click(owned) = &rec else {
            unreachable!("built as a click")
        };
        let borrowed = decode_shard_click(kind, &buf)
            .expect("decodes")
            .expect("a click");
        assert_eq!(
            (
                borrowed.id,
                borrowed.time_ms,
                borrowed.creative_id,
                borrowed.ip
            ),
            (owned.id, owned.time_ms, owned.creative_id, owned.ip)
        );
        assert_eq!(
            (borrowed.sub_ids.clone(), borrowed.extras.clone()),
            (vec!["a"], vec![("k", "v")])
        );
        assert!(decode_shard_click(kind, &buf[..buf.len() - 1]).is_err());
        assert!(decode_shard_click(kind, &longer).is_err());
        assert!(decode_shard_click(99, &buf).expect("not ours").is_none());
        let mut impression = Vec::new();
        let kind = encode_shard_record(
            &ShardRecord::Impression(ImpressionRec {
                time_ms: 1,
                campaign_id: 1,
                affiliate_id: 1,
                creative_id: None,
                sid1: String::new(),
                fingerprint: 1,
                unique: true,
            }),
            &mut impression,
        );
        assert!(decode_shard_click(kind, &impression)
            .expect("not a click")
            .is_none());
        let ctl = ControlRecord::Put {
            kind: CatalogKind::Campaign,
            id: 1,
            json: "{}".into(),
        };
        let (k, p) = encode_control_record(&ctl);
        assert_eq!(decode_control_record(k, &p).expect("decodes"), ctl);
        assert_eq!(record_to_json(k, &p)["Put"]["id"], 1);
    }
}
