//! The TOML configuration file (SPEC section 9) with environment overrides.

use engine::{Affiliate, Campaign, DispatchConfig, StorageConfig, Webhook};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub admin: AdminConfig,
    pub dispatch: DispatchConfig,
    pub campaigns: Vec<Campaign>,
    pub affiliates: Vec<Affiliate>,
    pub webhooks: Vec<Webhook>,
    /// True when no file was given: the demo campaign and affiliate are served, and an
    /// admin token is generated and kept in the data directory.
    #[serde(skip)]
    pub embedded_defaults: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    /// https here turns on `SameSite=None; Secure` cookies.
    pub public_url: String,
    /// CIDRs whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Where broken or paused links go; empty answers 404.
    pub fallback_url: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_string(),
            public_url: "http://localhost:8080".to_string(),
            trusted_proxies: Vec::new(),
            fallback_url: String::new(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Or `CLICKTRAIL_ADMIN_TOKEN`; empty turns the admin API off.
    pub token: String,
    /// A separate listener for `/api` and `/metrics`; empty = the main one.
    pub listen: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Loads `path` (or the embedded defaults when `None`) and applies environment overrides.
    pub fn load(_path: Option<&Path>) -> Result<Config, ConfigError> {
        todo!("server: config load")
    }
}
