//! clicktrail's tracking engine: sharded actors own clicks, fingerprints, conversions and
//! real-time stats, and persist through the `wal` crate; the dispatcher fans conversions
//! out to affiliate pixels and webhooks. The engine knows nothing of HTTP parsing: the
//! server hands it [`api`] requests and turns the outcomes into answers.

pub mod api;
pub mod clock;
pub mod config;
pub mod dispatcher;
pub mod fields;
pub mod inspect;
pub mod stats;
pub mod template;
pub mod view;

pub use api::*;
pub use clock::{Clock, Day, ManualClock, SystemClock};
pub use config::*;
pub use view::*;

use std::sync::Arc;

/// Everything the engine needs to start: storage, dispatch, and the catalog seeded from
/// the config file.
#[derive(Clone, Debug, Default)]
pub struct EngineConfig {
    pub storage: StorageConfig,
    pub dispatch: DispatchConfig,
    pub campaigns: Vec<Campaign>,
    pub affiliates: Vec<Affiliate>,
    pub webhooks: Vec<Webhook>,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Wal(#[from] wal::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Readiness as `/readyz` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Recovered and able to persist.
    pub ready: bool,
    /// Why not, when not.
    pub fault: Option<String>,
}

/// A cheap-to-clone handle to the running engine.
#[derive(Clone)]
pub struct Engine {
    _inner: Arc<()>,
}

impl Engine {
    /// Recovers the data directory (snapshot + replay), applies the config file's catalog,
    /// starts the shard actors and the dispatcher. Blocking; call before serving.
    pub fn open(_config: EngineConfig, _clock: Arc<dyn Clock>) -> Result<Engine, Error> {
        todo!("engine: open")
    }

    // ---- tracking surface -------------------------------------------------------------

    /// Records a click (durably, per the sync policy) and returns where to send the visitor.
    pub async fn click(&self, _request: ClickRequest) -> Result<ClickOutcome, Rejection> {
        todo!()
    }

    /// Counts an impression. Errors are reasons for metrics; the caller still answers a gif.
    pub async fn impression(&self, _request: ImpressionRequest) -> Result<(), Rejection> {
        todo!()
    }

    /// Attributes and records a conversion (SPEC 2.3) and queues its deliveries.
    pub async fn convert(&self, _request: ConversionRequest) -> ConversionOutcome {
        todo!()
    }

    // ---- catalog (admin) ---------------------------------------------------------------

    pub fn campaigns(&self) -> Vec<Campaign> {
        todo!()
    }
    pub fn campaign(&self, _id: u32) -> Option<Campaign> {
        todo!()
    }
    /// Creates or replaces; durable before it returns; takes effect at once.
    pub async fn put_campaign(&self, _campaign: Campaign) -> Result<Campaign, AdminError> {
        todo!()
    }
    pub async fn delete_campaign(&self, _id: u32) -> Result<(), AdminError> {
        todo!()
    }
    pub fn affiliates(&self) -> Vec<Affiliate> {
        todo!()
    }
    pub fn affiliate(&self, _id: u32) -> Option<Affiliate> {
        todo!()
    }
    pub async fn put_affiliate(&self, _affiliate: Affiliate) -> Result<Affiliate, AdminError> {
        todo!()
    }
    pub async fn delete_affiliate(&self, _id: u32) -> Result<(), AdminError> {
        todo!()
    }
    pub fn webhooks(&self) -> Vec<Webhook> {
        todo!()
    }
    pub fn webhook(&self, _id: u32) -> Option<Webhook> {
        todo!()
    }
    pub async fn put_webhook(&self, _webhook: Webhook) -> Result<Webhook, AdminError> {
        todo!()
    }
    pub async fn delete_webhook(&self, _id: u32) -> Result<(), AdminError> {
        todo!()
    }

    // ---- records (admin) ---------------------------------------------------------------

    /// The click with its conversions and their audits; `None` for unknown or malformed IDs.
    pub async fn click_view(&self, _click_id: &str) -> Option<ClickView> {
        todo!()
    }
    pub async fn conversions(&self, _query: ConversionQuery) -> Result<ConversionPage, AdminError> {
        todo!()
    }
    /// Changes a conversion's status durably and fires pixels set to fire on the new one.
    pub async fn set_conversion_status(
        &self,
        _conversion_id: &str,
        _status: ConversionStatus,
    ) -> Result<ConversionView, AdminError> {
        todo!()
    }
    pub async fn deliveries(
        &self,
        _state: Option<DeliveryState>,
        _limit: usize,
    ) -> Result<Vec<DeliveryView>, AdminError> {
        todo!()
    }
    /// Queues a new attempt of a delivery (any state), keeping its ID.
    pub async fn replay_delivery(&self, _delivery_id: &str) -> Result<DeliveryView, AdminError> {
        todo!()
    }
    /// Real-time report: counters grouped by the query's keys, with SPEC 3's ratios.
    pub async fn report(&self, _query: ReportQuery) -> Result<stats::Report, AdminError> {
        todo!()
    }

    // ---- operations --------------------------------------------------------------------

    pub fn health(&self) -> Health {
        todo!()
    }
    /// Stops the actors after they finish queued work, and syncs every log.
    pub async fn shutdown(&self) {
        todo!()
    }
}
