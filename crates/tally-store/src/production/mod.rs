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
//! [`start_background`] spawns the tasks a node runs beside the API: the
//! write-behind, the Redis recovery watch, the Pub/Sub reader that feeds the
//! [`ChangeFeed`], and the periodic reconciliation.

pub mod catalog;
pub mod connection;
mod durability;
pub mod keys;
pub mod likes;
pub mod pg;
mod pubsub;
pub mod reconcile;
mod scripts;
pub mod sync;
mod trouble;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

pub use catalog::PgCatalog;
pub use connection::{RedisConn, RedisTarget, Spread};
pub use durability::Durability;
pub use keys::Keys;
pub use likes::RedisLikes;
pub use sync::{SyncSettings, SyncWorker};
pub use trouble::RedisTrouble;

use crate::domain::{PostId, UserId};
use crate::{ChangeFeed, Stage, StoreError, Tasks};

/// PostgreSQL's schema, as migrations (run by [`Production::connect`];
/// public so that a test can stop at an older version and check that the
/// next migration keeps the rows).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Settings of the production backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "snake_case")]
pub struct ProductionSettings {
    /// Prefix of every Redis key: isolates tenants and tests.
    pub key_prefix: String,
    /// Partitions (streams, Cluster hash tags). Fixed at deploy time.
    pub partitions: u32,
    pub durability: Durability,
    /// A streaming replica of `database_url` for reads that may trail the
    /// primary: feed pages and who liked (not counts: they come from Redis).
    pub database_read_url: Option<String>,
    /// Replicated durability: how long a like waits for a replica's
    /// acknowledgement before answering 503.
    pub replication_timeout_ms: u64,
    /// Replicated durability: connections that carry the `WAIT`s (a
    /// `WAIT` holds its connection until a replica answers, so they spread
    /// over several).
    pub replication_connections: u32,
    /// Redis connect and response timeout: past it, Redis counts as down.
    pub redis_timeout_ms: u64,
    /// On a Redis Cluster: how long no master may answer before the node
    /// serves likes from PostgreSQL. Longer than a failover (the cluster's
    /// `cluster-node-timeout` plus a few seconds), which otherwise costs
    /// only 503s on the failed master's slots.
    pub cluster_down_after_ms: u64,
    pub pg_max_connections: u32,
    pub sync: SyncSettings,
    /// Seconds between periodic reconciliations (0: off).
    pub reconcile_interval_secs: u64,
    /// Whether the periodic reconciliation repairs what it finds.
    pub reconcile_repair: bool,
    /// Seconds without Redis errors after which a node that saw some (a
    /// master's failover, a restart) reconciles, not waiting for the next
    /// periodic pass (0: off). See `trouble`.
    pub reconcile_after_trouble_secs: u64,
}

impl Default for ProductionSettings {
    fn default() -> Self {
        Self {
            key_prefix: "tally".into(),
            partitions: 64,
            durability: Durability::Fast,
            database_read_url: None,
            replication_timeout_ms: 1000,
            replication_connections: 8,
            redis_timeout_ms: 500,
            cluster_down_after_ms: 20_000,
            pg_max_connections: 16,
            sync: SyncSettings::default(),
            reconcile_interval_secs: 300,
            reconcile_repair: true,
            reconcile_after_trouble_secs: 10,
        }
    }
}

/// Connections of the production backend.
#[derive(Clone)]
pub struct Production {
    /// For connections of their own (Pub/Sub).
    pub target: RedisTarget,
    pub redis: RedisConn,
    /// Reads that may trail (feed, who liked): the replica's pool, or `pg`.
    pub pg_read: PgPool,
    /// Replicated durability: the connections the `WAIT`s take turns on
    /// (empty in other modes).
    pub waiters: Vec<RedisConn>,
    pub pg: PgPool,
    pub keys: Keys,
    pub settings: ProductionSettings,
    /// Redis errors seen by this node's like path and write-behind.
    pub trouble: RedisTrouble,
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
        MIGRATOR
            .run(&pg)
            .await
            .map_err(|e| StoreError::Internal(e.into()))?;
        // Lazy: a replica that is down at start costs its reads (503 until
        // it is back), not the node's start.
        let pg_read = match &settings.database_read_url {
            Some(url) => PgPoolOptions::new()
                .max_connections(settings.pg_max_connections)
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy(url)?,
            None => pg.clone(),
        };
        let timeout = Duration::from_millis(settings.redis_timeout_ms);
        let target = RedisTarget::parse(redis_url)?;
        let mut redis = target
            .connect(timeout, timeout)
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?;
        scripts::load_all(&mut redis)
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?;
        let mut waiters = Vec::new();
        if settings.durability == Durability::Replicated {
            // A reply may wait for the replica as long as WAIT allows. (0
            // would make WAIT wait forever: it counts as 1 ms.)
            let wait = timeout + Duration::from_millis(settings.replication_timeout_ms.max(1));
            for _ in 0..settings.replication_connections.max(1) {
                waiters.push(
                    target
                        .connect(timeout, wait)
                        .await
                        .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?,
                );
            }
        }
        Ok(Self {
            target,
            redis,
            pg_read,
            waiters,
            pg,
            keys: Keys::new(&settings.key_prefix, settings.partitions),
            settings,
            trouble: RedisTrouble::default(),
        })
    }

    pub fn catalog(&self) -> PgCatalog {
        PgCatalog::new(self.pg.clone()).with_read_pool(self.pg_read.clone())
    }

    pub fn likes(&self, ack_timeout: Duration) -> RedisLikes {
        RedisLikes::new(
            self.redis.clone(),
            self.pg.clone(),
            self.keys.clone(),
            self.settings.durability,
            ack_timeout,
        )
        .with_replication(
            self.waiters.clone(),
            Duration::from_millis(self.settings.replication_timeout_ms),
        )
        .with_late_after(Duration::from_millis(
            self.settings.redis_timeout_ms + self.settings.redis_timeout_ms / 2,
        ))
        .with_trouble(self.trouble.clone())
    }

    /// Who likes `post` according to PostgreSQL (`None`: no such post).
    pub async fn likers_of(&self, post: PostId) -> Result<Option<Vec<UserId>>, StoreError> {
        pg::likers_of(&self.pg, post).await
    }

    /// Who likes `post` according to Redis (empty when not loaded).
    pub async fn redis_likers_of(&self, post: PostId) -> Result<Vec<UserId>, StoreError> {
        redis::cmd("SMEMBERS")
            .arg(self.keys.likers(post))
            .query_async(&mut self.redis.clone())
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))
    }

    pub fn worker(&self) -> SyncWorker {
        SyncWorker::new(
            self.redis.clone(),
            self.pg.clone(),
            self.keys.clone(),
            self.settings.sync.clone(),
        )
        .with_trouble(self.trouble.clone())
    }
}

/// What [`start_background`] runs beside the API.
pub struct BackgroundParts {
    /// The node's like path: watched for Redis outages and recoveries.
    pub likes: Option<Arc<RedisLikes>>,
    /// Where changes published by every node (Redis Pub/Sub) are announced
    /// on this node.
    pub changes: Option<ChangeFeed>,
    /// Run the write-behind here (else `tally worker` does).
    pub worker: bool,
}

/// Spawns the production backend's tasks on `tasks`: the Pub/Sub reader,
/// the Redis watch and the periodic reconciliation stop with the serving
/// stage; the write-behind stops last, after finishing its round.
pub fn start_background(production: &Production, tasks: &Tasks, parts: BackgroundParts) {
    if let Some(changes) = parts.changes {
        let (target, keys) = (production.target.clone(), production.keys.clone());
        let timeout = Duration::from_millis(production.settings.redis_timeout_ms);
        tasks.spawn(Stage::Serve, "pubsub reader", move |stop| {
            pubsub::read_changes(target, keys, timeout, changes, stop)
        });
    }
    if parts.worker {
        let worker = production.worker();
        tasks.spawn(Stage::Persist, "write-behind", move |stop| worker.run(stop));
    }
    // The node's like path is watched for outages; a cluster client is
    // watched (and renewed when it stalls) also where no likes are served,
    // as in `tally worker`.
    if parts.likes.is_some() || production.redis.is_cluster() {
        let (production, likes) = (production.clone(), parts.likes);
        tasks.spawn(Stage::Serve, "redis watch", move |stop| {
            likes::watch_redis(production, likes, stop)
        });
    }
    if production.settings.reconcile_interval_secs > 0
        || production.settings.reconcile_after_trouble_secs > 0
    {
        let production = production.clone();
        tasks.spawn(Stage::Serve, "periodic reconcile", move |stop| {
            periodic_reconcile(production, stop)
        });
    }
}

/// Runs reconciliation every interval, and after Redis trouble once Redis
/// has been quiet for `reconcile_after_trouble_secs`; each on one node at a
/// time (a lease of its own).
async fn periodic_reconcile(
    production: Production,
    stop: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    let settings = &production.settings;
    let every = Duration::from_secs(settings.reconcile_interval_secs);
    let quiet = Duration::from_secs(settings.reconcile_after_trouble_secs);
    let mut next = tokio::time::Instant::now() + every;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return Ok(()),
        }
        if !quiet.is_zero()
            && let Some(at) = production.trouble.settled(quiet)
        {
            // At most one such pass a minute over all nodes (a flapping
            // connection must not turn into back-to-back full passes); a
            // pass another node started after this node's trouble covers it.
            let lease = production.keys.reconcile_after_trouble_lease();
            let hold = quiet.max(Duration::from_secs(60));
            let started = reconcile_once(&production, lease, hold, "after Redis trouble").await;
            if started.is_some_and(|started| started >= at) {
                production.trouble.covered(at);
            }
        }
        if !every.is_zero() && tokio::time::Instant::now() >= next {
            next += every;
            let lease = production.keys.reconcile_lease();
            let hold = every.saturating_sub(Duration::from_secs(1));
            reconcile_once(&production, lease, hold, "periodic").await;
        }
    }
}

/// One reconciliation pass, if this node takes `lease` (held for `hold`, at
/// least a second). Returns when the pass that holds the lease started (ms
/// since the epoch): this node's, or another node's (`None`: unknown).
async fn reconcile_once(
    production: &Production,
    lease: String,
    hold: Duration,
    why: &str,
) -> Option<i64> {
    let mut redis = production.redis.clone();
    let now = crate::now_ms();
    // NX with GET: sets it if absent, else answers the holder's start.
    let holder: Option<String> = redis::cmd("SET")
        .arg(lease)
        .arg(now)
        .arg("NX")
        .arg("GET")
        .arg("PX")
        .arg(hold.as_millis().max(1000) as u64)
        .query_async(&mut redis)
        .await
        .ok()?;
    if let Some(holder) = holder {
        return holder.parse().ok();
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
            tracing::warn!(why, ?report, "reconciliation found drift")
        }
        Ok(report) => tracing::info!(
            why,
            checked = report.posts_checked,
            skipped = report.posts_skipped,
            "reconciliation: no drift"
        ),
        Err(err) => {
            tracing::warn!(why, error = %err, "reconciliation failed");
            return None;
        }
    }
    Some(now)
}
