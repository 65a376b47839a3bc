//! Settings: the built-in defaults (`config/default.toml`, compiled in), an optional TOML
//! file over them, and `SWITCHBOARD__SECTION__KEY` environment variables over both.
//!
//! Empty strings mean "not configured" so that an environment variable can switch an
//! optional key off.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

const DEFAULTS: &str = include_str!("../config/default.toml");

/// The development HS256 secret shipped in the defaults; refused off loopback.
pub const DEV_SECRET: &str = "switchboard-dev-secret";

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub server: ServerSettings,
    pub auth: AuthSettings,
    pub limits: LimitSettings,
    pub storage: StorageSettings,
    pub bus: BusSettings,
    pub redis: RedisSettings,
    pub postgres: PostgresSettings,
    pub ws: WsSettings,
    pub events: EventSettings,
    pub phone: PhoneSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub bind: String,
    pub allowed_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub max_sessions: usize,
    pub shutdown_timeout_secs: u64,
    pub workers: usize,
    pub static_dir: PathBuf,
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    pub hs256_secret: String,
    pub public_key_pem_file: String,
    pub issuer: String,
    pub audience: String,
    pub leeway_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LimitSettings {
    pub user_per_second: u32,
    pub user_burst: u32,
    pub service_per_second: u32,
    pub service_burst: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Embedded,
    Postgres,
    /// The retired store that kept everything in Redis: still read, so that `serve` can stop
    /// with a message naming what to use instead (`startup::check_backends`).
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StorageSettings {
    pub backend: StorageBackend,
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusBackend {
    Local,
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BusSettings {
    pub backend: BusBackend,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    pub url: String,
    pub key_prefix: String,
    /// The nodes of a Redis Cluster (`redis://` URLs, any subset of its nodes: the rest is
    /// discovered). Empty: a single Redis at `url`. Set: the cluster's sharded pub/sub
    /// (`bus::pubsub::cluster`), and `url` is not used.
    pub cluster_nodes: Vec<String>,
}

/// The PostgreSQL store (`storage.backend = "postgres"`).
#[derive(Debug, Clone, Deserialize)]
pub struct PostgresSettings {
    /// libpq-style URL, e.g. `postgres://user@127.0.0.1:5432/switchboard`.
    pub url: String,
    /// Most connections this node holds.
    pub pool_size: usize,
    /// Longest one store call may take, waiting for a connection included, in milliseconds:
    /// past it the call answers 503.
    pub timeout_ms: u64,
    /// Longest opening one connection may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// How long, in microseconds, a tenant's next ingestion transaction waits after the one
    /// before it for more inbound messages to go in with it (0: never; at most 100,000, larger
    /// values count as 100,000). A message that finds its tenant idle never waits. The wait
    /// ends on tokio's timer, which counts whole milliseconds and rounds up: 1 to 1,000 wait
    /// about 1 to 2 ms.
    pub ingest_linger_us: u64,
}

impl PostgresSettings {
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms)
    }

    pub fn connect_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.connect_timeout_ms)
    }

    /// `ingest_linger_us`, bounded; `None` for 0.
    pub fn ingest_linger(&self) -> Option<std::time::Duration> {
        (self.ingest_linger_us > 0).then(|| std::time::Duration::from_micros(self.ingest_linger_us.min(100_000)))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct WsSettings {
    pub heartbeat_interval_ms: u64,
    pub client_timeout_ms: u64,
    pub queue_capacity: usize,
    pub queue_bytes: usize,
    pub max_frame_bytes: usize,
    pub replay_limit: usize,
    pub max_sessions_per_user: usize,
    pub frame_rate: u32,
    pub frame_burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventSettings {
    pub retention: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PhoneSettings {
    pub default_country: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    pub filter: String,
}

impl Settings {
    /// The built-in defaults with environment overrides applied, and `file` between them.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Settings> {
        Settings::load_with(file, None)
    }

    /// `load` with `env` standing in for the process environment when given (tests).
    fn load_with(file: Option<&Path>, env: Option<config::Map<String, String>>) -> anyhow::Result<Settings> {
        let mut builder =
            config::Config::builder().add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        builder
            .add_source(
                config::Environment::with_prefix("SWITCHBOARD")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("server.allowed_origins")
                    .with_list_parse_key("server.trusted_proxies")
                    .with_list_parse_key("redis.cluster_nodes")
                    .try_parsing(true)
                    .source(env),
            )
            .build()
            .context("reading configuration")?
            .try_deserialize()
            .context("invalid configuration")
    }

    /// The built-in defaults alone, ignoring the environment (tests start from these).
    pub fn defaults() -> Settings {
        config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            // unwrap: the defaults are compiled in and covered by a unit test.
            .unwrap()
    }
}

/// `Some(s)` unless `s` is empty: how optional string keys are read.
pub fn configured(s: &str) -> Option<&str> {
    if s.trim().is_empty() { None } else { Some(s) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ingest_linger_is_off_at_zero_and_bounded_at_100_ms() {
        let with = |us| PostgresSettings {
            ingest_linger_us: us,
            ..Settings::defaults().postgres
        };
        assert_eq!(Settings::defaults().postgres.ingest_linger(), None, "off by default");
        assert_eq!(with(0).ingest_linger(), None);
        assert_eq!(with(250).ingest_linger(), Some(std::time::Duration::from_micros(250)));
        assert_eq!(
            with(5_000_000).ingest_linger(),
            Some(std::time::Duration::from_millis(100))
        );
    }

    #[test]
    fn built_in_defaults_describe_the_embedded_single_node() {
        let s = Settings::defaults();
        assert_eq!(s.storage.backend, StorageBackend::Embedded);
        assert_eq!(s.bus.backend, BusBackend::Local);
        assert!(s.server.bind.starts_with("127.0.0.1:"));
        assert_eq!(s.auth.hs256_secret, DEV_SECRET);
        assert_eq!(configured(&s.auth.issuer), None);
        assert!(s.postgres.url.starts_with("postgres://"));
        assert!(s.postgres.pool_size > 0 && s.postgres.timeout_ms > 0 && s.postgres.connect_timeout_ms > 0);
        assert!(s.redis.cluster_nodes.is_empty(), "a single Redis unless told otherwise");
    }

    #[test]
    fn cluster_nodes_are_a_comma_list_in_the_environment() {
        let env = config::Map::from([(
            "SWITCHBOARD__REDIS__CLUSTER_NODES".to_owned(),
            "redis://10.0.0.1:7000,redis://10.0.0.2:7000".to_owned(),
        )]);
        let s = Settings::load_with(None, Some(env)).unwrap();
        assert_eq!(
            s.redis.cluster_nodes,
            vec!["redis://10.0.0.1:7000".to_owned(), "redis://10.0.0.2:7000".to_owned()]
        );
    }
}
