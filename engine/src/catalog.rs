//! The catalog (campaigns, affiliates with their pixels, webhooks) and the control log that
//! makes it durable.
//!
//! Reads are lock-free enough for the hot path (a `DashMap` of `Arc`s: one shard lock per
//! lookup, never held across an await). Writes go through [`ControlLog`]: validated,
//! appended to `data_dir/control/`, synced, and only then applied to the maps, so an
//! admin change is durable before it is visible and visible as soon as it returns.
//!
//! File versus admin changes across restarts: the config file seeds the catalog. At each
//! start an entry of the file is (re)applied only when the file's version of it (a hash of
//! its JSON) differs from the version last applied, which the control log remembers. So an
//! edited file entry wins once, an admin change to an entry the file did not change
//! survives restarts, and an entry removed from the file is left as the admin API has it.

use crate::api::AdminError;
use crate::codec::{self, CatalogKind, ControlRecord, ControlSnapshot};
use crate::config::{Affiliate, AffiliateStatus, Campaign, HttpMethod, PixelKind, Webhook};
use crate::fingerprint::FingerprintKey;
use dashmap::DashMap;
use std::collections::HashMap;
use std::hash::Hasher;
use std::path::Path;
use std::sync::Arc;

/// Longest cookie life: browsers cap cookie lifetimes at 400 days.
pub const MAX_COOKIE_LIFE_DAYS: u32 = 400;
/// Longest unique or backup window, in hours: the cookie life cap.
pub const MAX_WINDOW_HOURS: u32 = MAX_COOKIE_LIFE_DAYS * 24;
/// Longest name, token or currency text, in bytes: the parameter value limit of SPEC 7.
pub const MAX_TEXT_BYTES: usize = 256;
/// Longest URL or HTML template, in bytes: half the 8 KiB URL limit, leaving room for
/// expanded values.
pub const MAX_TEMPLATE_BYTES: usize = 4096;
/// Most pixels per affiliate: each conversion fans out to at most this many deliveries
/// from one affiliate, which bounds the conversion's WAL record.
pub const MAX_PIXELS_PER_AFFILIATE: usize = 32;
/// Most webhooks: each counted conversion fans out to every one of them.
pub const MAX_WEBHOOKS: usize = 64;
/// Most campaigns or affiliates: bounds the catalog's memory and control log.
pub const MAX_CATALOG_ENTRIES: usize = 100_000;
/// Most CIDRs in a campaign's postback allowlist.
pub const MAX_POSTBACK_IPS: usize = 256;
/// Control-log records after which start-up compacts the log into a snapshot.
const CONTROL_SNAPSHOT_AFTER_RECORDS: usize = 1024;
/// Control segments are small: the catalog changes rarely.
const CONTROL_SEGMENT_BYTES: u64 = 2 << 20;
/// Largest control record: an affiliate with every pixel at its longest template
/// (32 x 8 KiB) with room to spare.
const CONTROL_MAX_RECORD_BYTES: u32 = 512 << 10;

/// A catalog table: entries by ID. Every click and pixel looks up its campaign and
/// affiliate, and SipHash was most of the cost of those lookups; it guards a table against
/// keys chosen to collide, but only the operator inserts keys here (a request's ID is only
/// looked up), so the tables use hashbrown's hasher, as the shard's maps do.
type IdMap<T> = DashMap<u32, Arc<T>, hashbrown::DefaultHashBuilder>;

/// The shared, in-memory catalog.
#[derive(Default)]
pub struct Catalog {
    campaigns: IdMap<Campaign>,
    affiliates: IdMap<Affiliate>,
    webhooks: IdMap<Webhook>,
}

fn sorted<T: Clone>(map: &IdMap<T>) -> Vec<T> {
    let mut items: Vec<(u32, T)> = map
        .iter()
        .map(|e| (*e.key(), e.value().as_ref().clone()))
        .collect();
    items.sort_by_key(|(id, _)| *id);
    items.into_iter().map(|(_, v)| v).collect()
}

impl Catalog {
    pub fn campaign(&self, id: u32) -> Option<Arc<Campaign>> {
        self.campaigns.get(&id).map(|e| Arc::clone(e.value()))
    }
    pub fn affiliate(&self, id: u32) -> Option<Arc<Affiliate>> {
        self.affiliates.get(&id).map(|e| Arc::clone(e.value()))
    }
    /// Whether the affiliate exists and is blocked, without taking a reference to it (the
    /// click and impression paths ask only this).
    pub fn affiliate_status(&self, id: u32) -> Option<AffiliateStatus> {
        self.affiliates.get(&id).map(|e| e.value().status)
    }
    pub fn webhook(&self, id: u32) -> Option<Arc<Webhook>> {
        self.webhooks.get(&id).map(|e| Arc::clone(e.value()))
    }
    pub fn campaigns(&self) -> Vec<Campaign> {
        sorted(&self.campaigns)
    }
    pub fn affiliates(&self) -> Vec<Affiliate> {
        sorted(&self.affiliates)
    }
    pub fn webhooks(&self) -> Vec<Webhook> {
        sorted(&self.webhooks)
    }
    /// Every webhook, in ID order (the fan-out order).
    pub fn webhook_list(&self) -> Vec<Arc<Webhook>> {
        // Asked for every counted conversion; most networks have no webhook, and iterating
        // the map allocates (a guard per map shard) where checking it does not.
        if self.webhooks.is_empty() {
            return Vec::new();
        }
        let mut v: Vec<Arc<Webhook>> = self
            .webhooks
            .iter()
            .map(|e| Arc::clone(e.value()))
            .collect();
        v.sort_by_key(|w| w.id);
        v
    }

    /// The longest cookie life of any campaign (at least the default 30 days), in ms:
    /// clicks older than this can no longer convert and are dropped at snapshots.
    pub fn max_cookie_life_ms(&self) -> u64 {
        let days = self
            .campaigns
            .iter()
            .map(|e| e.value().cookie_life_days)
            .max()
            .unwrap_or(0)
            .max(Campaign::default().cookie_life_days);
        u64::from(days) * 86_400_000
    }

    fn apply(&self, kind: CatalogKind, id: u32, json: Option<&str>) -> Result<(), String> {
        match (kind, json) {
            (CatalogKind::Campaign, Some(j)) => {
                let v: Campaign = serde_json::from_str(j).map_err(|e| e.to_string())?;
                self.campaigns.insert(id, Arc::new(v));
            }
            (CatalogKind::Affiliate, Some(j)) => {
                let v: Affiliate = serde_json::from_str(j).map_err(|e| e.to_string())?;
                self.affiliates.insert(id, Arc::new(v));
            }
            (CatalogKind::Webhook, Some(j)) => {
                let v: Webhook = serde_json::from_str(j).map_err(|e| e.to_string())?;
                self.webhooks.insert(id, Arc::new(v));
            }
            (CatalogKind::Campaign, None) => {
                self.campaigns.remove(&id);
            }
            (CatalogKind::Affiliate, None) => {
                self.affiliates.remove(&id);
            }
            (CatalogKind::Webhook, None) => {
                self.webhooks.remove(&id);
            }
        }
        Ok(())
    }

    fn len(&self, kind: CatalogKind) -> usize {
        match kind {
            CatalogKind::Campaign => self.campaigns.len(),
            CatalogKind::Affiliate => self.affiliates.len(),
            CatalogKind::Webhook => self.webhooks.len(),
        }
    }

    fn contains(&self, kind: CatalogKind, id: u32) -> bool {
        match kind {
            CatalogKind::Campaign => self.campaigns.contains_key(&id),
            CatalogKind::Affiliate => self.affiliates.contains_key(&id),
            CatalogKind::Webhook => self.webhooks.contains_key(&id),
        }
    }

    fn entries(&self) -> Vec<(CatalogKind, u32, String)> {
        let mut out = Vec::new();
        for c in self.campaigns() {
            out.push((CatalogKind::Campaign, c.id, json(&c)));
        }
        for a in self.affiliates() {
            out.push((CatalogKind::Affiliate, a.id, json(&a)));
        }
        for w in self.webhooks() {
            out.push((CatalogKind::Webhook, w.id, json(&w)));
        }
        out
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn invalid(field: &str, reason: impl Into<String>) -> AdminError {
    AdminError::Invalid {
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn check_text(field: &str, value: &str) -> Result<(), AdminError> {
    if value.len() > MAX_TEXT_BYTES {
        return Err(invalid(
            field,
            format!("longer than {MAX_TEXT_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn check_url(field: &str, template: &str) -> Result<(), AdminError> {
    if template.len() > MAX_TEMPLATE_BYTES {
        return Err(invalid(
            field,
            format!("longer than {MAX_TEMPLATE_BYTES} bytes"),
        ));
    }
    crate::template::validate_url_template(template).map_err(|reason| invalid(field, reason))
}

fn check_money(field: &str, value: f64) -> Result<(), AdminError> {
    crate::money::to_micros(value)
        .map(|_| ())
        .ok_or_else(|| invalid(field, "must be a finite amount between 0 and 1e9"))
}

/// Checks a campaign before it is saved.
pub fn validate_campaign(c: &Campaign) -> Result<(), AdminError> {
    if c.id == 0 {
        return Err(invalid("id", "must be a positive integer"));
    }
    check_text("name", &c.name)?;
    check_url("landing_url", &c.landing_url)?;
    if !(1..=MAX_COOKIE_LIFE_DAYS).contains(&c.cookie_life_days) {
        return Err(invalid(
            "cookie_life_days",
            format!("must be 1..={MAX_COOKIE_LIFE_DAYS}"),
        ));
    }
    if c.unique_window_hours > MAX_WINDOW_HOURS {
        return Err(invalid(
            "unique_window_hours",
            format!("at most {MAX_WINDOW_HOURS}"),
        ));
    }
    if c.backup_window_hours > MAX_WINDOW_HOURS {
        return Err(invalid(
            "backup_window_hours",
            format!("at most {MAX_WINDOW_HOURS}"),
        ));
    }
    check_money("revenue", c.revenue)?;
    check_money("payout", c.payout)?;
    if !c.payout_percent.is_finite() || !(0.0..=100.0).contains(&c.payout_percent) {
        return Err(invalid("payout_percent", "must be between 0 and 100"));
    }
    check_currency("currency", &c.currency)?;
    check_text("postback_token", &c.postback_token)?;
    if c.postback_ips.len() > MAX_POSTBACK_IPS {
        return Err(invalid(
            "postback_ips",
            format!("at most {MAX_POSTBACK_IPS} entries"),
        ));
    }
    Ok(())
}

/// A currency code: three ASCII letters (ISO 4217).
pub fn check_currency(field: &str, value: &str) -> Result<(), AdminError> {
    if value.len() != 3 || !value.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(invalid(field, "must be a three-letter currency code"));
    }
    Ok(())
}

/// Checks an affiliate and its pixels before it is saved.
pub fn validate_affiliate(a: &Affiliate) -> Result<(), AdminError> {
    if a.id == 0 {
        return Err(invalid("id", "must be a positive integer"));
    }
    check_text("name", &a.name)?;
    if a.pixels.len() > MAX_PIXELS_PER_AFFILIATE {
        return Err(invalid(
            "pixels",
            format!("at most {MAX_PIXELS_PER_AFFILIATE}"),
        ));
    }
    for (i, p) in a.pixels.iter().enumerate() {
        let field = format!("pixels[{i}]");
        if p.campaign == Some(0) {
            return Err(invalid(
                &format!("{field}.campaign"),
                "must be a positive integer",
            ));
        }
        match p.kind {
            PixelKind::Server | PixelKind::Image => {
                check_url(&format!("{field}.url"), &p.url)?;
                if !p.html.is_empty() {
                    return Err(invalid(
                        &format!("{field}.html"),
                        "only iframe and js pixels take html",
                    ));
                }
            }
            PixelKind::Iframe | PixelKind::Js => {
                if p.url.is_empty() == p.html.is_empty() {
                    return Err(invalid(&field, "give exactly one of url or html"));
                }
                if !p.url.is_empty() {
                    check_url(&format!("{field}.url"), &p.url)?;
                }
                if p.html.len() > MAX_TEMPLATE_BYTES {
                    return Err(invalid(&format!("{field}.html"), "too long"));
                }
            }
        }
        if p.kind != PixelKind::Server && p.method == HttpMethod::Post {
            return Err(invalid(
                &format!("{field}.method"),
                "only server pixels can POST",
            ));
        }
        if p.fire_on.is_empty() {
            return Err(invalid(
                &format!("{field}.fire_on"),
                "must name at least one status",
            ));
        }
    }
    Ok(())
}

/// Checks a webhook before it is saved.
pub fn validate_webhook(w: &Webhook) -> Result<(), AdminError> {
    use base64::Engine as _;
    if w.id == 0 {
        return Err(invalid("id", "must be a positive integer"));
    }
    check_url("url", &w.url)?;
    if !w.secret.is_empty() {
        let ok = w
            .secret
            .strip_prefix("whsec_")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .is_some_and(|k| !k.is_empty() && k.len() <= 64);
        if !ok {
            return Err(invalid(
                "secret",
                "must be whsec_ followed by base64 of 1..=64 bytes",
            ));
        }
    }
    if w.fire_on.is_empty() {
        return Err(invalid("fire_on", "must name at least one status"));
    }
    Ok(())
}

/// A stable hash of an entry's JSON (the config file's version of it).
fn version_hash(json: &str) -> u64 {
    let mut h = siphasher::sip::SipHasher13::new_with_keys(0, 0);
    h.write(json.as_bytes());
    h.finish()
}

/// Reshard markers as the control log last recorded them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReshardMarkers {
    pub committed: Option<u32>,
    pub done: Option<u32>,
}

impl ReshardMarkers {
    /// A committed reshard whose finishing steps have not all run.
    pub fn unfinished(&self) -> Option<u32> {
        match (self.committed, self.done) {
            (Some(c), Some(d)) if c == d => None,
            (Some(c), _) => Some(c),
            _ => None,
        }
    }
}

/// The control log: the durable side of the catalog, the fingerprint key, and the
/// reshard markers. One writer at a time (a mutex in the engine).
pub struct ControlLog {
    wal: wal::Wal,
    file_seen: HashMap<(CatalogKind, u32), u64>,
    pub key: FingerprintKey,
    pub reshard: ReshardMarkers,
}

impl ControlLog {
    /// Opens `dir`, recovers the catalog into `catalog`, and creates the fingerprint key on
    /// first start.
    pub fn open(
        storage: &crate::layout::StorageFactory,
        dir: &Path,
        catalog: &Catalog,
        recovery: wal::RecoveryMode,
    ) -> Result<ControlLog, crate::Error> {
        let options = wal::Options {
            recovery,
            segment_size_bytes: CONTROL_SEGMENT_BYTES,
            max_record_bytes: CONTROL_MAX_RECORD_BYTES,
            sync: wal::SyncPolicy::Always,
        };
        let (wal, recovered) = crate::layout::open_log(storage, dir, options)?;
        let mut log = ControlLog {
            wal,
            file_seen: HashMap::new(),
            key: FingerprintKey([0; 16]),
            reshard: ReshardMarkers::default(),
        };
        let mut secret = None;
        if let Some(snap) = &recovered.snapshot {
            let s = codec::decode_control_snapshot(&snap.data)
                .map_err(|e| crate::Error::Config(format!("control snapshot: {e}")))?;
            secret = s.secret;
            for (kind, id, json) in &s.entries {
                catalog
                    .apply(*kind, *id, Some(json))
                    .map_err(|e| crate::Error::Config(format!("control snapshot entry: {e}")))?;
            }
            log.file_seen = s.file_seen.iter().map(|&(k, id, h)| ((k, id), h)).collect();
            log.reshard = ReshardMarkers {
                committed: s.reshard_committed,
                done: s.reshard_done,
            };
        }
        for record in &recovered.records {
            let rec = codec::decode_control_record(record.kind, &record.payload)
                .map_err(|e| crate::Error::Config(format!("control record {}: {e}", record.lsn)))?;
            match rec {
                ControlRecord::Secret(k) => secret = Some(k),
                ControlRecord::Put { kind, id, json } => {
                    catalog.apply(kind, id, Some(&json)).map_err(|e| {
                        crate::Error::Config(format!("control record {}: {e}", record.lsn))
                    })?
                }
                ControlRecord::Delete { kind, id } => {
                    let _ = catalog.apply(kind, id, None);
                }
                ControlRecord::FileSeen { kind, id, hash } => {
                    log.file_seen.insert((kind, id), hash);
                }
                ControlRecord::ReshardCommitted { shards } => log.reshard.committed = Some(shards),
                ControlRecord::ReshardDone { shards } => log.reshard.done = Some(shards),
            }
        }
        match secret {
            Some(k) => log.key = FingerprintKey(k),
            None => {
                log.key = FingerprintKey::generate();
                log.append(&ControlRecord::Secret(log.key.0))?;
                log.wal.commit()?;
            }
        }
        // After a repair, the snapshot also makes it permanent (the damaged bytes stay on disk).
        if recovered.records.len() > CONTROL_SNAPSHOT_AFTER_RECORDS
            || !recovered.report.dropped.is_empty()
        {
            log.snapshot(catalog)?;
        }
        Ok(log)
    }

    fn append(&mut self, rec: &ControlRecord) -> Result<(), wal::Error> {
        let (kind, payload) = codec::encode_control_record(rec);
        self.wal.append(kind, &payload).map(|_| ())
    }

    fn snapshot(&mut self, catalog: &Catalog) -> Result<(), wal::Error> {
        let snap = ControlSnapshot {
            secret: Some(self.key.0),
            entries: catalog.entries(),
            file_seen: self
                .file_seen
                .iter()
                .map(|(&(k, id), &h)| (k, id, h))
                .collect(),
            reshard_committed: self.reshard.committed,
            reshard_done: self.reshard.done,
        };
        let lsn = self.wal.next_lsn();
        self.wal
            .write_snapshot(lsn, &codec::encode_control_snapshot(&snap))
    }

    /// Applies the config file's entries whose file version changed since the last start.
    pub fn seed(
        &mut self,
        catalog: &Catalog,
        campaigns: &[Campaign],
        affiliates: &[Affiliate],
        webhooks: &[Webhook],
    ) -> Result<(), crate::Error> {
        let mut entries = Vec::new();
        for c in campaigns {
            validate_campaign(c)
                .map_err(|e| crate::Error::Config(format!("campaign {}: {e}", c.id)))?;
            entries.push((CatalogKind::Campaign, c.id, json(c)));
        }
        for a in affiliates {
            validate_affiliate(a)
                .map_err(|e| crate::Error::Config(format!("affiliate {}: {e}", a.id)))?;
            entries.push((CatalogKind::Affiliate, a.id, json(a)));
        }
        for w in webhooks {
            validate_webhook(w)
                .map_err(|e| crate::Error::Config(format!("webhook {}: {e}", w.id)))?;
            entries.push((CatalogKind::Webhook, w.id, json(w)));
        }
        let mut changed = false;
        for (kind, id, json) in entries {
            let hash = version_hash(&json);
            if self.file_seen.get(&(kind, id)) == Some(&hash) {
                continue;
            }
            self.append(&ControlRecord::Put {
                kind,
                id,
                json: json.clone(),
            })?;
            self.append(&ControlRecord::FileSeen { kind, id, hash })?;
            catalog
                .apply(kind, id, Some(&json))
                .map_err(crate::Error::Config)?;
            self.file_seen.insert((kind, id), hash);
            changed = true;
        }
        if changed {
            self.wal.commit()?;
        }
        Ok(())
    }

    /// Saves an entry durably, then makes it visible.
    pub fn put(
        &mut self,
        catalog: &Catalog,
        kind: CatalogKind,
        id: u32,
        json: String,
    ) -> Result<(), AdminError> {
        let limit = if kind == CatalogKind::Webhook {
            MAX_WEBHOOKS
        } else {
            MAX_CATALOG_ENTRIES
        };
        if !catalog.contains(kind, id) && catalog.len(kind) >= limit {
            return Err(invalid(
                "id",
                format!("the catalog holds at most {limit} of these"),
            ));
        }
        let rec = ControlRecord::Put {
            kind,
            id,
            json: json.clone(),
        };
        self.append(&rec)
            .and_then(|_| self.wal.commit())
            .map_err(|e| AdminError::Unavailable(e.to_string()))?;
        catalog
            .apply(kind, id, Some(&json))
            .map_err(AdminError::Unavailable)
    }

    /// Deletes an entry durably, then makes the deletion visible.
    pub fn delete(
        &mut self,
        catalog: &Catalog,
        kind: CatalogKind,
        id: u32,
    ) -> Result<(), AdminError> {
        if !catalog.contains(kind, id) {
            return Err(AdminError::NotFound);
        }
        self.append(&ControlRecord::Delete { kind, id })
            .and_then(|_| self.wal.commit())
            .map_err(|e| AdminError::Unavailable(e.to_string()))?;
        let _ = catalog.apply(kind, id, None);
        Ok(())
    }

    /// Records a reshard marker durably.
    pub fn mark_reshard(&mut self, rec: ControlRecord) -> Result<(), crate::Error> {
        match rec {
            ControlRecord::ReshardCommitted { shards } => self.reshard.committed = Some(shards),
            ControlRecord::ReshardDone { shards } => self.reshard.done = Some(shards),
            _ => {}
        }
        self.append(&rec)?;
        self.wal.sync()?;
        Ok(())
    }

    pub fn sync(&mut self) -> Result<(), wal::Error> {
        self.wal.sync()
    }
}
