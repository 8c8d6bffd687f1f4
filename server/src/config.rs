//! The TOML configuration file (SPEC section 9) with environment overrides.
//!
//! Every scalar field of `[server]`, `[storage]`, `[admin]` and `[dispatch]` can be set
//! from the environment as `CLICKTRAIL_<SECTION>_<FIELD>`, upper case; the environment wins
//! over the file. Lists take comma-separated values. For example:
//!
//! | variable | field |
//! |---|---|
//! | `CLICKTRAIL_SERVER_LISTEN` | `server.listen` |
//! | `CLICKTRAIL_SERVER_PUBLIC_URL` | `server.public_url` |
//! | `CLICKTRAIL_SERVER_TRUSTED_PROXIES` | `server.trusted_proxies` (CIDRs, comma-separated) |
//! | `CLICKTRAIL_SERVER_FALLBACK_URL` | `server.fallback_url` |
//! | `CLICKTRAIL_STORAGE_DATA_DIR` | `storage.data_dir` |
//! | `CLICKTRAIL_STORAGE_SHARDS` | `storage.shards` |
//! | `CLICKTRAIL_STORAGE_SYNC` | `storage.sync` (`always`, `interval`, `never`) |
//! | `CLICKTRAIL_STORAGE_SYNC_INTERVAL_MS` | `storage.sync_interval_ms` |
//! | `CLICKTRAIL_ADMIN_TOKEN` | `admin.token` |
//! | `CLICKTRAIL_ADMIN_LISTEN` | `admin.listen` |
//! | `CLICKTRAIL_DISPATCH_ALLOW_PRIVATE_TARGETS` | `dispatch.allow_private_targets` |
//! | `CLICKTRAIL_DISPATCH_RETRY_SCHEDULE_SECS` | `dispatch.retry_schedule_secs` |
//! | `CLICKTRAIL_DISPATCH_TIMEOUT_MS` | `dispatch.timeout_ms` |
//!
//! Campaigns, affiliates and webhooks come only from the file (or the admin API).

use engine::{Affiliate, Campaign, DispatchConfig, StorageConfig, Webhook};
use ipnet::IpNet;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

/// Environment variables start with this.
pub const ENV_PREFIX: &str = "CLICKTRAIL_";

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
    #[error("cannot read {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Loads `path` (or the embedded defaults when `None`) and applies environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Config::from_toml(&text, &env).map_err(|e| match e {
                    ConfigError::Invalid(m) => {
                        ConfigError::Invalid(format!("{}: {m}", path.display()))
                    }
                    e => e,
                })
            }
            None => Config::embedded(&env),
        }
    }

    /// Parses a config file's text, then applies the overrides `env` knows.
    pub fn from_toml(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .and_then(|span| text.as_bytes().get(..span.start))
                .map(|before| before.iter().filter(|b| **b == b'\n').count() + 1);
            ConfigError::Invalid(match line {
                Some(line) => format!("line {line}: {}", e.message()),
                None => e.message().to_string(),
            })
        })?;
        let config = config.with_env(env)?;
        config.validate()?;
        Ok(config)
    }

    /// The embedded defaults: the demo catalog, served at the public URL, which follows the
    /// listen port unless set explicitly.
    pub fn embedded(env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut config = Config::default().with_env(env)?;
        config.embedded_defaults = true;
        if env("CLICKTRAIL_SERVER_PUBLIC_URL").is_none() {
            if let Ok(addr) = config.server.listen.parse::<SocketAddr>() {
                config.server.public_url = if addr.ip().is_loopback() || addr.ip().is_unspecified()
                {
                    format!("http://localhost:{}", addr.port())
                } else {
                    format!("http://{addr}")
                };
            }
        }
        let (campaigns, affiliates) = crate::demo::catalog(&config.server.public_url);
        config.campaigns = campaigns;
        config.affiliates = affiliates;
        config.validate()?;
        Ok(config)
    }

    /// Whether cookies must be `SameSite=None; Secure`.
    pub fn public_url_is_https(&self) -> bool {
        self.server
            .public_url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    }

    /// The admin API's token, `None` when the API is off.
    pub fn admin_token(&self) -> Option<&str> {
        Some(self.admin.token.as_str()).filter(|t| !t.is_empty())
    }

    fn with_env(mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        self.server = override_section("server", &self.server, env)?;
        self.storage = override_section("storage", &self.storage, env)?;
        self.admin = override_section("admin", &self.admin, env)?;
        self.dispatch = override_section("dispatch", &self.dispatch, env)?;
        Ok(self)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, why: &str| Err(ConfigError::Invalid(format!("{field}: {why}")));
        if self.server.listen.parse::<SocketAddr>().is_err() {
            return invalid("server.listen", "expected an address like 127.0.0.1:8080");
        }
        if !self.admin.listen.is_empty() && self.admin.listen.parse::<SocketAddr>().is_err() {
            return invalid(
                "admin.listen",
                "expected an address like 127.0.0.1:9090, or empty",
            );
        }
        if !is_http_url(&self.server.public_url) {
            return invalid("server.public_url", "expected an http:// or https:// URL");
        }
        if !self.server.fallback_url.is_empty() && !is_http_url(&self.server.fallback_url) {
            return invalid(
                "server.fallback_url",
                "expected an http:// or https:// URL, or empty",
            );
        }
        Ok(())
    }
}

fn is_http_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && !url.chars().any(|c| c.is_control() || c == ' ')
}

/// Applies `CLICKTRAIL_<SECTION>_<FIELD>` to each scalar or list field of one section,
/// parsing the text as the field's current type.
fn override_section<T: Serialize + DeserializeOwned>(
    section: &str,
    current: &T,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<T, ConfigError> {
    let mut value = toml::Value::try_from(current)
        .map_err(|e| ConfigError::Invalid(format!("{section}: {e}")))?;
    let Some(table) = value.as_table_mut() else {
        return toml::Value::try_into(value).map_err(|e| ConfigError::Invalid(e.to_string()));
    };
    let mut changed = Vec::new();
    for (field, old) in table.iter_mut() {
        let var = format!(
            "{ENV_PREFIX}{}_{}",
            section.to_uppercase(),
            field.to_uppercase()
        );
        let Some(text) = env(&var) else { continue };
        *old =
            parse_like(old, &text).map_err(|why| ConfigError::Invalid(format!("{var}: {why}")))?;
        changed.push(var);
    }
    value.try_into().map_err(|e: toml::de::Error| {
        ConfigError::Invalid(format!("{}: {}", changed.join(", "), e.message()))
    })
}

fn parse_like(old: &toml::Value, text: &str) -> Result<toml::Value, String> {
    use toml::Value;
    let text = text.trim();
    Ok(match old {
        Value::String(_) => Value::String(text.to_string()),
        Value::Integer(_) => Value::Integer(
            text.parse()
                .map_err(|_| format!("expected a whole number, got {text:?}"))?,
        ),
        Value::Float(_) => Value::Float(
            text.parse()
                .map_err(|_| format!("expected a number, got {text:?}"))?,
        ),
        Value::Boolean(_) => Value::Boolean(match text {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(format!("expected true or false, got {text:?}")),
        }),
        Value::Array(_) => Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| match s.parse::<i64>() {
                    Ok(n) => Value::Integer(n),
                    Err(_) => Value::String(s.to_string()),
                })
                .collect(),
        ),
        _ => return Err("this field cannot be set from the environment".to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn the_spec_example_parses() {
        let text = r#"
[server]
listen = "127.0.0.1:8080"
public_url = "https://t.example"
trusted_proxies = ["10.0.0.0/8"]
fallback_url = "https://example.com/"

[storage]
data_dir = "clicktrail-data"
shards = 0
sync = "always"
sync_interval_ms = 5

[admin]
token = "secret"
listen = ""

[dispatch]
allow_private_targets = false
retry_schedule_secs = [30, 120]
timeout_ms = 10000

[[campaigns]]
id = 1
name = "Demo shop"
landing_url = "https://shop.example/?ref={click_id}"
postback_ips = ["192.0.2.0/24"]

[[affiliates]]
id = 7
name = "Acme Media"

[[affiliates.pixels]]
campaign = 1
kind = "server"
url = "https://aff.example/pb?click={click_id}"
method = "GET"
fire_on = ["approved"]

[[webhooks]]
id = 1
url = "https://crm.example/hooks"
"#;
        let config = Config::from_toml(text, &env(&[])).unwrap();
        assert!(config.public_url_is_https());
        assert_eq!(config.admin_token(), Some("secret"));
        assert_eq!(config.campaigns[0].id, 1);
        assert_eq!(config.affiliates[0].pixels[0].campaign, Some(1));
        assert!(!config.embedded_defaults);
    }

    #[test]
    fn errors_name_the_bad_field() {
        let cases = [
            ("[server]\nlisen = \"x\"\n", "lisen"),
            ("[[campaigns]]\nid = 1\nlanding = \"x\"\n", "landing"),
            ("[storage]\nsync = \"sometimes\"\n", "sometimes"),
            ("[server]\nlisten = \"nope\"\n", "server.listen"),
            ("[bogus]\n", "bogus"),
            ("\n\n[server]\nlisen = \"x\"\n", "line 4"),
        ];
        for (text, needle) in cases {
            let err = Config::from_toml(text, &env(&[])).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn environment_overrides_the_file() {
        let config = Config::from_toml(
            "[storage]\nshards = 2\n",
            &env(&[
                ("CLICKTRAIL_SERVER_LISTEN", "127.0.0.1:9000"),
                ("CLICKTRAIL_STORAGE_DATA_DIR", "/tmp/ct"),
                ("CLICKTRAIL_STORAGE_SHARDS", "4"),
                ("CLICKTRAIL_STORAGE_SYNC", "never"),
                ("CLICKTRAIL_ADMIN_TOKEN", "t0k"),
                (
                    "CLICKTRAIL_SERVER_TRUSTED_PROXIES",
                    "10.0.0.0/8, 192.168.0.0/16",
                ),
                ("CLICKTRAIL_DISPATCH_RETRY_SCHEDULE_SECS", "1,2,3"),
                ("CLICKTRAIL_DISPATCH_ALLOW_PRIVATE_TARGETS", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:9000");
        assert_eq!(config.storage.data_dir, Path::new("/tmp/ct"));
        assert_eq!(config.storage.shards, 4);
        assert_eq!(config.storage.sync, engine::SyncMode::Never);
        assert_eq!(config.admin_token(), Some("t0k"));
        assert_eq!(config.server.trusted_proxies.len(), 2);
        assert_eq!(config.dispatch.retry_schedule_secs, vec![1, 2, 3]);
        assert!(config.dispatch.allow_private_targets);

        for (var, value) in [
            ("CLICKTRAIL_STORAGE_SHARDS", "many"),
            ("CLICKTRAIL_STORAGE_SYNC", "sometimes"),
            ("CLICKTRAIL_SERVER_TRUSTED_PROXIES", "not-a-cidr"),
        ] {
            let err = Config::from_toml("", &env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(var), "{var}={value} gave {err:?}");
        }
    }

    #[test]
    fn embedded_defaults_serve_the_demo_on_the_listen_port() {
        let config =
            Config::embedded(&env(&[("CLICKTRAIL_SERVER_LISTEN", "127.0.0.1:9001")])).unwrap();
        assert!(config.embedded_defaults);
        assert_eq!(config.server.public_url, "http://localhost:9001");
        assert_eq!(config.campaigns[0].id, 1);
        assert_eq!(config.affiliates[0].id, 1);
        assert!(config.campaigns[0]
            .landing_url
            .starts_with("http://localhost:9001/demo/landing"));
        assert_eq!(
            config.admin_token(),
            None,
            "generated at start-up, in the data dir"
        );
    }
}
