//! Settings, layered: built-in defaults, then a TOML file (`--config`), then
//! `TALLY_*` environment variables (nested keys with `__`, e.g.
//! `TALLY_RATE_LIMITS__USER_WRITES_PER_SEC=50`), then command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use tally_store::embedded::LikesConfig;
use tally_store::production::ProductionSettings;

use crate::connections::ConnectionSettings;
use crate::cors::CorsSettings;
use crate::images::ImageLimits;
use crate::live::limits::LiveLimits;
use crate::ratelimit::RateLimitSettings;
use crate::sessions::AuthSettings;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "snake_case")]
pub struct Settings {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Where the embedded store, images and keys live.
    pub data_dir: PathBuf,
    /// `text` for people, `json` for log pipelines.
    pub log_format: LogFormat,
    /// How long a session token is valid.
    pub token_ttl_secs: u64,
    /// Largest accepted image upload, in bytes.
    pub max_upload_bytes: usize,
    /// Largest accepted JSON body, in bytes.
    pub max_json_bytes: usize,
    /// Largest accepted image, in pixels (checked before decoding).
    pub max_image_pixels: u64,
    /// Thumbnail width in pixels.
    pub thumbnail_width: u32,
    /// Requests taking longer are answered 503 `timeout`.
    pub request_timeout_secs: u64,
    /// After SIGTERM, how long the node keeps serving while `/readyz`
    /// answers 503 `draining`, so a load balancer's health checks take it out
    /// of rotation before it stops accepting connections. 0: stop at once.
    pub drain_grace_ms: u64,
    pub rate_limits: RateLimitSettings,
    pub likes: LikesSettings,
    /// Most live pushes per post per second (per viewer).
    pub live_max_updates_per_sec: u32,
    /// Messages buffered per Socket.io connection before pushes are dropped.
    pub live_socket_buffer: usize,
    /// How long a node serves a computed trending ranking before it
    /// computes it again (0: every request computes).
    pub trending_cache_ms: u64,
    /// Redis of the production backend; with `database_url`, selects it.
    /// Without both, the embedded backend runs. `redis+cluster://h:p,h:p`
    /// names a Redis Cluster by some of its nodes.
    pub redis_url: Option<String>,
    /// PostgreSQL of the production backend.
    pub database_url: Option<String>,
    /// Key prefix, partitions, durability, write-behind, reconciliation.
    #[serde(flatten)]
    pub production: ProductionSettings,
    /// The operator's load panel in the web client.
    pub load_panel: LoadPanelSettings,
    /// Timeouts and caps on client connections (docs/OPERATIONS.md, "Limits").
    pub connections: ConnectionSettings,
    /// Caps on live connections and subscriptions (docs/LIVE.md).
    pub live_limits: LiveLimits,
    /// Session checks and signing key reloads (see [`crate::sessions`]).
    pub auth: AuthSettings,
    /// Browser origins allowed to call the API cross-origin (see
    /// [`crate::cors`]); none by default.
    pub cors: CorsSettings,
}

/// Who may start load runs from the web client. Off by default: a load run
/// creates users and posts and puts real load on the deployment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "snake_case")]
pub struct LoadPanelSettings {
    pub enabled: bool,
    /// Usernames allowed to run loads; empty: every signed-in user (for a
    /// demo or a private box, never for a shared deployment).
    pub admins: Vec<String>,
}

impl LoadPanelSettings {
    pub fn allows(&self, username: &str) -> bool {
        self.enabled && (self.admins.is_empty() || self.admins.iter().any(|a| a == username))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?} (text, json)")),
        }
    }
}

/// The like path's durability tuning.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "snake_case")]
pub struct LikesSettings {
    /// Most likes in one group commit.
    pub max_batch: usize,
    /// How long a like waits for its commit (embedded, or strict mode on
    /// the production backend) before answering 503.
    pub ack_timeout_ms: u64,
    /// How long a toggle's answer is kept for retries with the same
    /// `Idempotency-Key` (in Redis; in memory on the embedded backend and
    /// during a fallback to PostgreSQL).
    pub idempotency_retention_secs: u64,
    /// Most keyed toggle answers kept in memory (embedded backend, and per
    /// node during a fallback); the oldest go first.
    pub idempotency_max_keys: usize,
}

impl Default for LikesSettings {
    fn default() -> Self {
        let d = LikesConfig::default();
        Self {
            max_batch: d.max_batch,
            ack_timeout_ms: d.ack_timeout.as_millis() as u64,
            idempotency_retention_secs: d.idempotency_retention.as_secs(),
            idempotency_max_keys: d.idempotency_max_keys,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            log_format: LogFormat::Text,
            token_ttl_secs: 7 * 24 * 3600,
            max_upload_bytes: 20 * 1024 * 1024,
            max_json_bytes: 16 * 1024,
            max_image_pixels: ImageLimits::default().max_pixels,
            thumbnail_width: ImageLimits::default().thumbnail_width,
            request_timeout_secs: 30,
            drain_grace_ms: 2000,
            rate_limits: RateLimitSettings::default(),
            likes: LikesSettings::default(),
            live_max_updates_per_sec: 10,
            live_socket_buffer: 64,
            trending_cache_ms: 1000,
            redis_url: None,
            database_url: None,
            production: ProductionSettings::default(),
            load_panel: LoadPanelSettings::default(),
            connections: ConnectionSettings::default(),
            live_limits: LiveLimits::default(),
            auth: AuthSettings::default(),
            cors: CorsSettings::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

impl Settings {
    /// Loads settings from an optional file, the environment, and `overrides`
    /// (command-line flags, highest priority; unset flags are skipped).
    pub fn load(file: Option<&Path>, overrides: &impl Serialize) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(Env::prefixed("TALLY_").split("__").ignore(&["config"]))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| ConfigError(Box::new(e)))
    }

    pub fn image_limits(&self) -> ImageLimits {
        ImageLimits {
            max_pixels: self.max_image_pixels,
            thumbnail_width: self.thumbnail_width,
        }
    }

    pub fn likes_config(&self) -> LikesConfig {
        LikesConfig {
            max_batch: self.likes.max_batch,
            ack_timeout: Duration::from_millis(self.likes.ack_timeout_ms),
            idempotency_retention: Duration::from_secs(
                self.likes.idempotency_retention_secs.max(1),
            ),
            idempotency_max_keys: self.likes.idempotency_max_keys,
        }
    }

    pub fn drain_grace(&self) -> Duration {
        Duration::from_millis(self.drain_grace_ms)
    }

    /// Settings for tests: a fresh data dir, port 0, no rate limits, no
    /// drain grace (no load balancer watches an in-process app).
    pub fn for_tests(data_dir: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            drain_grace_ms: 0,
            rate_limits: RateLimitSettings {
                user_writes_per_sec: 0,
                user_write_burst: 0,
                auth_per_min_per_ip: 0,
            },
            production: ProductionSettings {
                // Tests fire thousands of concurrent likes at a debug build
                // on two cores: replies can wait in the client's queue past
                // the production default (500 ms), which a node takes for
                // Redis being down. Tests that kill Redis see refused
                // connections, which switch over at once either way.
                redis_timeout_ms: 3000,
                ..ProductionSettings::default()
            },
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        listen: Option<SocketAddr>,
    }

    #[test]
    fn layers_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tally.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nthumbnail_width = 320\n[rate_limits]\nuser_writes_per_sec = 5\n",
        )
        .unwrap();
        let s = Settings::load(Some(&file), &Flags { listen: None }).unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.thumbnail_width, 320);
        assert_eq!(s.rate_limits.user_writes_per_sec, 5);
        let s = Settings::load(
            Some(&file),
            &Flags {
                listen: Some("127.0.0.1:7000".parse().unwrap()),
            },
        )
        .unwrap();
        assert_eq!(s.listen.port(), 7000);
    }

    #[test]
    fn cors_origins_read_as_a_list_or_commas() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tally.toml");
        let flags = Flags { listen: None };
        assert!(
            Settings::load(None, &flags)
                .unwrap()
                .cors
                .allowed_origins
                .is_empty()
        );
        std::fs::write(
            &file,
            "[cors]\nallowed_origins = [\"http://127.0.0.1:19006\", \"https://a.example\"]\n",
        )
        .unwrap();
        let s = Settings::load(Some(&file), &flags).unwrap();
        assert_eq!(
            s.cors.allowed_origins,
            ["http://127.0.0.1:19006", "https://a.example"]
        );
        std::fs::write(
            &file,
            "[cors]\nallowed_origins = \"http://127.0.0.1:19006,https://a.example\"\n",
        )
        .unwrap();
        let s = Settings::load(Some(&file), &flags).unwrap();
        assert_eq!(
            s.cors.allowed_origins,
            ["http://127.0.0.1:19006", "https://a.example"]
        );
    }

    #[test]
    fn missing_file_is_an_error() {
        assert!(
            Settings::load(
                Some(Path::new("/nonexistent.toml")),
                &Flags { listen: None }
            )
            .is_err()
        );
    }
}
