//! The production backend: Redis answers likes, PostgreSQL keeps them.
//!
//! - [`likes::RedisLikes`]: one script per like on Redis (dedup, count,
//!   version, outbox event in one atomic step), PostgreSQL directly while
//!   Redis is down.
//! - [`sync::SyncWorker`]: the write-behind from the partition streams to
//!   PostgreSQL.
//! - [`reconcile`]: drift detection and repair.
//! - [`catalog::PgCatalog`]: users, posts and likers on PostgreSQL.
//!
//! [`Background`] owns the tasks a node runs beside the API: the
//! write-behind, the Redis recovery watch and the periodic reconciliation.

pub mod catalog;
pub mod keys;
pub mod likes;
pub mod pg;
pub mod reconcile;
mod scripts;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use catalog::PgCatalog;
pub use keys::Keys;
pub use likes::{Durability, RedisLikes};
pub use sync::{SyncSettings, SyncWorker};

use super::StoreError;

/// Settings of the production backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "snake_case")]
pub struct ProductionSettings {
    /// Prefix of every Redis key: isolates tenants and tests.
    pub key_prefix: String,
    /// Partitions (streams, Cluster hash tags). Fixed at deploy time.
    pub partitions: u32,
    pub durability: Durability,
    /// Redis connect and response timeout: past it, Redis counts as down.
    pub redis_timeout_ms: u64,
    pub pg_max_connections: u32,
    pub sync: SyncSettings,
    /// Seconds between periodic reconciliations (0: off).
    pub reconcile_interval_secs: u64,
    /// Whether the periodic reconciliation repairs what it finds.
    pub reconcile_repair: bool,
}

impl Default for ProductionSettings {
    fn default() -> Self {
        Self {
            key_prefix: "tally".into(),
            partitions: 64,
            durability: Durability::Fast,
            redis_timeout_ms: 500,
            pg_max_connections: 16,
            sync: SyncSettings::default(),
            reconcile_interval_secs: 300,
            reconcile_repair: true,
        }
    }
}

/// Connections of the production backend.
#[derive(Clone)]
pub struct Production {
    /// For connections of their own (Pub/Sub).
    pub client: redis::Client,
    pub redis: ConnectionManager,
    pub pg: PgPool,
    pub keys: Keys,
    pub settings: ProductionSettings,
}

impl Production {
    /// Connects to both stores and migrates PostgreSQL.
    pub async fn connect(
        redis_url: &str,
        database_url: &str,
        settings: ProductionSettings,
    ) -> Result<Self, StoreError> {
        let pg = PgPoolOptions::new()
            .max_connections(settings.pg_max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(database_url)
            .await?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pg)
            .await
            .map_err(|e| StoreError::Internal(e.into()))?;
        let timeout = Duration::from_millis(settings.redis_timeout_ms);
        let client = redis::Client::open(redis_url).map_err(|e| StoreError::Internal(e.into()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let mut redis = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?;
        scripts::load_all(&mut redis)
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?;
        Ok(Self {
            client,
            redis,
            pg,
            keys: Keys::new(&settings.key_prefix, settings.partitions),
            settings,
        })
    }

    pub fn catalog(&self) -> PgCatalog {
        PgCatalog::new(self.pg.clone())
    }

    pub fn likes(&self, ack_timeout: Duration) -> RedisLikes {
        RedisLikes::new(
            self.redis.clone(),
            self.pg.clone(),
            self.keys.clone(),
            self.settings.durability,
            ack_timeout,
        )
    }

    pub fn worker(&self) -> SyncWorker {
        SyncWorker::new(
            self.redis.clone(),
            self.pg.clone(),
            self.keys.clone(),
            self.settings.sync.clone(),
        )
    }
}

/// The tasks a node runs beside the API. Stopped by [`Background::stop`].
pub struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    /// Starts the write-behind (if `with_worker`), the Redis recovery watch
    /// (if `likes` is given), the live-count subscription (if `live` is
    /// given) and the periodic reconciliation.
    pub fn start(
        production: &Production,
        likes: Option<Arc<RedisLikes>>,
        live: Option<Arc<crate::live::LiveHub>>,
        with_worker: bool,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        if let Some(hub) = live {
            tasks.push(tokio::spawn(crate::live::pubsub::subscribe_loop(
                production.client.clone(),
                crate::live::pubsub::channel(production.keys.prefix()),
                hub,
                stopped.clone(),
            )));
        }
        if with_worker {
            tasks.push(tokio::spawn(production.worker().run(stopped.clone())));
        }
        if let Some(likes) = likes {
            tasks.push(tokio::spawn(watch_redis(
                production.clone(),
                likes,
                stopped.clone(),
            )));
        }
        if production.settings.reconcile_interval_secs > 0 {
            tasks.push(tokio::spawn(periodic_reconcile(
                production.clone(),
                stopped,
            )));
        }
        Self { stop, tasks }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Pings Redis four times a second. While it is up: two pings in a row
/// without an answer switch the node to PostgreSQL (a hung Redis; a
/// refused connection switches requests over by itself). While it is down:
/// waits for it to answer, for the write-behind to drain what it still
/// holds, then returns the node to the fast path.
async fn watch_redis(
    production: Production,
    likes: Arc<RedisLikes>,
    mut stop: watch::Receiver<bool>,
) {
    let mut redis = production.redis.clone();
    let mut failed_pings = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.changed() => return,
        }
        let ping: Result<String, _> = redis::cmd("PING").query_async(&mut redis).await;
        if !likes.is_redis_down() {
            // Requests only switch over on a refused or broken connection;
            // a Redis that hangs is seen here: two pings in a row without
            // an answer (each waits `redis_timeout_ms`).
            match ping {
                Ok(_) => failed_pings = 0,
                Err(err) => {
                    failed_pings += 1;
                    if failed_pings >= 2 {
                        likes.mark_down(&err);
                    }
                }
            }
            continue;
        }
        failed_pings = 0;
        if ping.is_err() {
            continue;
        }
        match sync::backlog(&mut redis, &production.keys).await {
            Ok(0) => {
                if let Err(err) = likes.recover().await {
                    tracing::warn!(error = %err, "Redis recovery failed; retrying");
                }
            }
            Ok(n) => tracing::info!(
                backlog = n,
                "Redis is back; waiting for the write-behind to drain"
            ),
            Err(err) => tracing::warn!(error = %err, "Redis recovery check failed"),
        }
    }
}

/// Runs reconciliation every interval on one node at a time (a lease).
async fn periodic_reconcile(production: Production, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_secs(production.settings.reconcile_interval_secs);
    let mut redis = production.redis.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let lease: Result<Option<String>, _> = redis::cmd("SET")
            .arg(production.keys.reconcile_lease())
            .arg("held")
            .arg("NX")
            .arg("PX")
            .arg(every.as_millis().saturating_sub(1000).max(1000) as u64)
            .query_async(&mut redis)
            .await;
        if !matches!(lease, Ok(Some(_))) {
            continue;
        }
        match reconcile::reconcile(
            &mut redis,
            &production.pg,
            &production.keys,
            production.settings.reconcile_repair,
        )
        .await
        {
            Ok(report) if report.drift() > 0 => {
                tracing::warn!(?report, "reconciliation found drift")
            }
            Ok(report) => tracing::info!(
                checked = report.posts_checked,
                skipped = report.posts_skipped,
                "reconciliation: no drift"
            ),
            Err(err) => tracing::warn!(error = %err, "reconciliation failed"),
        }
    }
}
