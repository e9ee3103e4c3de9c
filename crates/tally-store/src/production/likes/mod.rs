//! The production like path: one Redis round trip per like, PostgreSQL
//! through the write-behind, and a fallback straight to PostgreSQL while
//! Redis is unreachable.
//!
//! - here: [`RedisLikes`] and its [`Likes`] implementation;
//! - [`failover`]: when the node switches to PostgreSQL and back;
//! - [`cold_load`]: a post's likers loaded from PostgreSQL on first touch.

mod cold_load;
mod failover;

pub(super) use failover::watch_redis;
use failover::{is_shard_trouble, is_unreachable};

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::production::RedisTrouble;
use crate::production::connection::{RedisConn, Spread};
use async_trait::async_trait;
use dashmap::DashMap;
use sqlx::PgPool;

use super::Durability;
use super::keys::Keys;
use super::pg;
use super::scripts;
use super::sync;
use crate::domain::{IdempotencyKey, PostId, UserId};
use crate::now_ms;
use crate::replay::ReplayCache;
use crate::trending::{self, Granularity, Trend, TrendWindow};
use crate::{Health, LikeOp, LikeOutcome, LikeState, Likes, StoreError, SyncStatus};

/// The Redis + PostgreSQL implementation of [`Likes`].
pub struct RedisLikes {
    redis: RedisConn,
    pg: PgPool,
    keys: Keys,
    durability: Durability,
    /// How long a strict-mode like waits for PostgreSQL before 503.
    ack_timeout: Duration,
    /// Redis Pub/Sub channel the like script announces changes on (one
    /// Redis); on a cluster, each partition's sharded channel.
    live_channel: String,
    /// On a Redis Cluster: sharded Pub/Sub, and one unreachable shard
    /// answers 503 instead of switching the node to PostgreSQL (see
    /// `failover::is_shard_trouble`).
    cluster: bool,
    /// Set while Redis is unreachable: likes go straight to PostgreSQL.
    redis_down: AtomicBool,
    /// Posts changed through PostgreSQL while Redis was down: their Redis
    /// state is stale and is dropped (to reload) when Redis returns. A std
    /// mutex: no await while held.
    touched_while_down: Mutex<HashSet<PostId>>,
    /// Fallback operations hold it shared; returning to the fast path
    /// takes it exclusively, so no fallback write is still in flight when
    /// posts start reloading from PostgreSQL (a load that missed one would
    /// leave Redis behind PostgreSQL).
    fallback_gate: tokio::sync::RwLock<()>,
    /// One cold load per post at a time on this node: a burst of likes on
    /// a post not yet in Redis waits for one load instead of each running
    /// its own (thousands of PostgreSQL reads and scratch sets, whose
    /// queueing pushed Redis calls past their timeout and into fallback).
    loading: DashMap<PostId, Arc<tokio::sync::Mutex<()>>>,
    /// Replicated durability: the connections that carry the `WAIT`s, in
    /// turn (a `WAIT` holds its connection until a replica answers).
    waiters: Vec<RedisConn>,
    next_waiter: AtomicUsize,
    /// How long `WAIT` may take before the like answers 503.
    replication_timeout: Duration,
    /// How long Redis keeps a keyed toggle's answer for its retries.
    idempotency_retention: Duration,
    /// Keyed toggles' answers while serving from PostgreSQL (this node only).
    fallback_replays: ReplayCache,
    /// A like script that starts running later than this after it was
    /// sent refuses to run (see [`Self::apply_redis`]); zero: never.
    late_after: Duration,
    /// Redis errors met, for the reconciliation that follows a failover.
    trouble: RedisTrouble,
}

/// The like script's status for "started after its deadline, did nothing".
const LATE: i64 = -2;

impl RedisLikes {
    pub fn new(
        redis: RedisConn,
        pg: PgPool,
        keys: Keys,
        durability: Durability,
        ack_timeout: Duration,
    ) -> Self {
        Self {
            cluster: redis.is_cluster(),
            redis,
            pg,
            live_channel: keys.live_channel(),
            keys,
            durability,
            ack_timeout,
            redis_down: AtomicBool::new(false),
            touched_while_down: Mutex::new(HashSet::new()),
            fallback_gate: tokio::sync::RwLock::new(()),
            loading: DashMap::new(),
            waiters: Vec::new(),
            next_waiter: AtomicUsize::new(0),
            replication_timeout: Duration::from_secs(1),
            idempotency_retention: Duration::from_secs(600),
            fallback_replays: ReplayCache::new(Duration::from_secs(600), 100_000),
            late_after: Duration::ZERO,
            trouble: RedisTrouble::default(),
        }
    }

    /// Where this node notes the Redis errors its likes meet (see
    /// `production::trouble`).
    pub fn with_trouble(mut self, trouble: RedisTrouble) -> Self {
        self.trouble = trouble;
        self
    }

    /// How late a like script may start before it refuses to run: more
    /// than the request's own timeout (its caller has answered 503 by
    /// then) and less than the two failed pings that switch the node to
    /// PostgreSQL (`failover::watch_redis`), so a held script never lands
    /// after an answer given from PostgreSQL.
    pub fn with_late_after(mut self, late_after: Duration) -> Self {
        self.late_after = late_after;
        self
    }

    /// How long a keyed toggle's answer is kept (in Redis, and per node
    /// while serving from PostgreSQL, at most `max_keys` there).
    pub fn with_idempotency(mut self, retention: Duration, max_keys: usize) -> Self {
        self.idempotency_retention = retention;
        self.fallback_replays = ReplayCache::new(retention, max_keys);
        self
    }

    /// Replicated durability's connections and `WAIT` timeout.
    pub fn with_replication(mut self, waiters: Vec<RedisConn>, timeout: Duration) -> Self {
        self.waiters = waiters;
        self.replication_timeout = timeout;
        self
    }

    /// Replicated durability: waits until a replica has everything the
    /// master applied so far, the like (or the change a repeat repeats)
    /// included. `WAIT` covers only the writes of its own connection, so a
    /// fence write goes first on the same connection, in one pipeline (a
    /// reconnect cannot come between them); and it blocks its connection,
    /// so it runs on one of the waiters, never on the shared connection.
    async fn wait_replicated(&self, post: PostId) -> Result<(), StoreError> {
        let Some(conn) = (!self.waiters.is_empty()).then(|| {
            let n = self.next_waiter.fetch_add(1, Ordering::Relaxed);
            self.waiters[n % self.waiters.len()].clone()
        }) else {
            return Err(StoreError::Internal(anyhow::anyhow!(
                "replicated durability without replication connections"
            )));
        };
        let started = Instant::now();
        let (replicas,): (i64,) = redis::pipe()
            .cmd("SET")
            .arg(self.keys.fence(self.keys.partition(post)))
            .arg(1)
            .ignore()
            .cmd("WAIT")
            .arg(1)
            .arg(self.replication_timeout.as_millis().max(1) as u64)
            .query_async(&mut conn.clone())
            .await
            .map_err(|e| self.redis_error(e))?;
        metrics::histogram!("tally_replication_wait_seconds")
            .record(started.elapsed().as_secs_f64());
        if replicas >= 1 {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "no Redis replica acknowledged this like in time (replicated durability); it may still land".into(),
            ))
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn redis_error(&self, err: redis::RedisError) -> StoreError {
        if !err.is_timeout() {
            self.trouble.note();
        }
        if err.is_timeout() {
            StoreError::Unavailable(format!("redis did not answer in time: {err}"))
        } else if self.cluster && is_shard_trouble(&err) {
            StoreError::Unavailable(format!("a Redis Cluster shard is unavailable: {err}"))
        } else if is_unreachable(&err) {
            self.mark_down(&err);
            StoreError::Unavailable(format!("redis: {err}"))
        } else {
            StoreError::Internal(anyhow::Error::new(err).context("redis"))
        }
    }

    /// Runs the like script. `None`: the post is not loaded in Redis.
    /// Otherwise the outcome and, if it changed, the event's version.
    /// A toggle's `request` (id, how long its answer is kept) makes a
    /// replay answer what the first run did.
    async fn apply_redis(
        &self,
        post: PostId,
        user: UserId,
        op: LikeOp,
        request: Option<(&str, Duration)>,
        redis: &mut RedisConn,
    ) -> Result<Option<(LikeOutcome, i64)>, redis::RedisError> {
        let partition = self.keys.partition(post);
        let started = Instant::now();
        // The trending buckets are named by this node's clock: a script's
        // keys must be named before it runs, so it cannot name them from
        // its own `TIME` (docs/ARCHITECTURE.md, decisions).
        let now = now_ms();
        // Borrowed on one Redis: no allocation per like for the channel.
        let shard_channel;
        let channel: &str = if self.cluster {
            shard_channel = self.keys.shard_channel(partition);
            &shard_channel
        } else {
            &self.live_channel
        };
        let script = |deadline: i64| {
            let mut script = scripts::LIKE.prepare_invoke();
            script
                .key(self.keys.count(post))
                .key(self.keys.likers(post))
                .key(self.keys.stream(partition))
                .key(self.keys.seq(partition));
            for granularity in [Granularity::Minute, Granularity::Hour] {
                script.key(
                    self.keys
                        .trend(partition, granularity, granularity.bucket(now)),
                );
            }
            if let Some((id, _)) = request {
                script.key(self.keys.reply(post, id));
            }
            script
                .arg(user)
                .arg(op.as_str())
                .arg(post)
                .arg(now)
                .arg(channel)
                .arg(if self.cluster { "1" } else { "0" })
                .arg(trending::MINUTE_BUCKET_TTL_MS)
                .arg(trending::HOUR_BUCKET_TTL_MS)
                .arg(request.map_or(0, |(_, keep)| keep.as_millis().max(1) as u64))
                .arg(deadline);
            script
        };
        // The deadline, by this node's clock: a script held on a stalled
        // link and run after it is refused, since by then this node may
        // answer the same user from PostgreSQL with an older version than
        // the late event would carry (found by tests/api/faults.rs).
        let deadline = match self.late_after.is_zero() {
            true => 0,
            false => now + self.late_after.as_millis() as i64,
        };
        let (mut status, mut count, mut liked, mut version): (i64, i64, i64, i64) =
            script(deadline).invoke_async(redis).await?;
        if status == LATE && started.elapsed() < self.late_after {
            // Refused although it came back in time: the clocks of this
            // node and Redis disagree by more than the margin. Run without
            // the deadline rather than refuse every like; say so loudly.
            metrics::counter!("tally_redis_clock_skew_total").increment(1);
            tracing::error!(
                node_ms = now,
                redis_ms = count,
                "this node's clock and Redis's disagree; late like scripts are not refused until they agree (run NTP)"
            );
            (status, count, liked, version) = script(0).invoke_async(redis).await?;
        }
        metrics::histogram!("tally_redis_like_seconds").record(started.elapsed().as_secs_f64());
        if status == LATE {
            metrics::counter!("tally_redis_late_refused_total").increment(1);
            return Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the like script started after its deadline and did not run",
            )));
        }
        if status < 0 {
            return Ok(None);
        }
        let outcome = LikeOutcome {
            liked: liked == 1,
            count,
            changed: status == 1,
            version,
        };
        Ok(Some((outcome, version)))
    }

    /// Every partition's top `limit` for `window`, one script per
    /// partition (its buckets, and the stored sum of the closed ones, are
    /// in its slot) sent together through
    /// [`Spread`], merged into the global top `limit`: a post lives in one
    /// partition, so the best of the partitions' best are the best.
    async fn trending_redis(
        &self,
        window: TrendWindow,
        limit: usize,
        redis: &mut RedisConn,
    ) -> Result<Vec<Trend>, redis::RedisError> {
        let started = Instant::now();
        let buckets = window.bucket_range(now_ms());
        let granularity = window.granularity();
        let current = *buckets.end();
        // The sum of the older buckets serves the current bucket's period
        // (plus a margin for clocks), see scripts::TREND_TOP.
        let sum_ttl_ms = granularity.millis() + trending::MINUTE_MS;
        let mut reads = Spread::new();
        for partition in 0..self.keys.partitions() {
            let mut script = scripts::TREND_TOP.prepare_invoke();
            script
                .key(self.keys.trend_sum(partition, granularity, current))
                .key(self.keys.trend(partition, granularity, current))
                .key(self.keys.trend(partition, granularity, current - 1));
            for bucket in buckets.clone().filter(|b| *b < current - 1) {
                script.key(self.keys.trend(partition, granularity, bucket));
            }
            script.arg(limit).arg(sum_ttl_ms);
            reads.script(partition, &script);
        }
        // Each reply is flat: post, score, post, score…
        let replies: Vec<Vec<String>> = reads.query_as(redis).await?;
        let mut trends = Vec::new();
        for pair in replies.iter().flat_map(|r| r.chunks_exact(2)) {
            let (post, score) = (&pair[0], &pair[1]);
            // Scores are integers, formatted by Redis as doubles.
            if let (Ok(post), Ok(score)) = (post.parse::<PostId>(), score.parse::<f64>()) {
                trends.push(Trend {
                    post,
                    score: score.round() as i64,
                });
            }
        }
        metrics::histogram!("tally_trending_compute_seconds", "window" => window.as_str())
            .record(started.elapsed().as_secs_f64());
        Ok(trending::rank(trends, limit))
    }

    /// Strict mode: waits until the write-behind committed `version` of the
    /// post's partition to PostgreSQL.
    async fn wait_applied(&self, post: PostId, version: i64) -> Result<(), StoreError> {
        if version <= 0 {
            return Ok(());
        }
        let key = self.keys.applied(self.keys.partition(post));
        let mut redis = self.redis.clone();
        let deadline = Instant::now() + self.ack_timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            let applied: Option<i64> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut redis)
                .await
                .map_err(|e| self.redis_error(e))?;
            if applied.unwrap_or(0) >= version {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Unavailable(
                    "PostgreSQL has not committed this like in time (strict durability); it may still land".into(),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    async fn apply_fallback(
        &self,
        post: PostId,
        user: UserId,
        op: LikeOp,
        key: Option<&IdempotencyKey>,
    ) -> Result<LikeOutcome, StoreError> {
        // A keyed toggle's retry on this node: Redis, which keeps the
        // answers for every node, is out of reach (docs/API.md).
        if let Some(answer) = key.and_then(|k| self.fallback_replays.get(post, user, k)) {
            return Ok(LikeOutcome {
                changed: false,
                ..answer
            });
        }
        // Marked before the write: a request cancelled after its commit
        // must still have the post's Redis state dropped on recovery.
        if let Ok(mut touched) = self.touched_while_down.lock() {
            touched.insert(post);
        }
        let outcome = pg::apply_direct(&self.pg, post, user, op, now_ms()).await?;
        if let Some(key) = key {
            self.fallback_replays.put(post, user, key, outcome);
        }
        metrics::counter!("tally_fallback_likes_total").increment(1);
        Ok(outcome)
    }

    /// [`Likes::apply`], and with `key` [`Likes::toggle_once`].
    async fn apply_keyed(
        &self,
        post: PostId,
        user: UserId,
        op: LikeOp,
        key: Option<&IdempotencyKey>,
    ) -> Result<LikeOutcome, StoreError> {
        if self.is_redis_down() {
            let _gate = self.fallback_gate.read().await;
            // Checked again under the gate: recovery may have just finished.
            if self.is_redis_down() {
                return self.apply_fallback(post, user, op, key).await;
            }
        }
        // A post found unloaded twice in a row is a sign of eviction,
        // which the deployment must not allow (maxmemory-policy noeviction).
        let mut redis = self.redis.clone();
        // One id for every try of a toggle (see scripts::LIKE): the
        // client's key, or a random one for this request's own retries;
        // like and unlike need none. The key's charset is safe in a key.
        let request = match (op, key) {
            (LikeOp::Toggle, Some(key)) => Some((
                format!("k:{user}:{post}:{}", key.as_str()),
                self.idempotency_retention,
            )),
            (LikeOp::Toggle, None) => Some((
                format!("{:x}", rand::random::<u64>()),
                Duration::from_secs(10),
            )),
            _ => None,
        };
        let request = request.as_ref().map(|(id, keep)| (id.as_str(), *keep));
        for attempt in 0..3 {
            let applied = self.apply_redis(post, user, op, request, &mut redis).await;
            if let Err(err) = &applied
                && !err.is_timeout()
            {
                self.trouble.note();
            }
            match applied {
                Ok(None) if attempt < 2 => self.load(post).await?,
                Ok(None) => break,
                Ok(Some((outcome, version))) => {
                    match self.durability {
                        Durability::Fast => {}
                        // Also a repeat waits, for the change it repeats.
                        Durability::Replicated => self.wait_replicated(post).await?,
                        // Strict: also a repeat waits, for the change it
                        // repeats (`version` is then the partition's latest).
                        Durability::Strict => self.wait_applied(post, version).await?,
                    }
                    return Ok(outcome);
                }
                Err(err) if err.is_timeout() => {
                    return Err(StoreError::Unavailable(
                        "Redis did not answer in time; the like may still land".into(),
                    ));
                }
                Err(err) if self.cluster && is_shard_trouble(&err) => {
                    return Err(StoreError::Unavailable(format!(
                        "the Redis Cluster shard of post {post} is unavailable (failover or slot move in progress); the like may still land: {err}"
                    )));
                }
                Err(err) if is_unreachable(&err) => {
                    self.mark_down(&err);
                    let _gate = self.fallback_gate.read().await;
                    return self.apply_fallback(post, user, op, key).await;
                }
                Err(err) => {
                    return Err(StoreError::Internal(
                        anyhow::Error::new(err).context("like script"),
                    ));
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "post {post} keeps disappearing from Redis (is maxmemory-policy noeviction?)"
        )))
    }
}

#[async_trait]
impl Likes for RedisLikes {
    async fn apply(
        &self,
        post: PostId,
        user: UserId,
        op: LikeOp,
    ) -> Result<LikeOutcome, StoreError> {
        self.apply_keyed(post, user, op, None).await
    }

    async fn toggle_once(
        &self,
        post: PostId,
        user: UserId,
        key: &IdempotencyKey,
    ) -> Result<LikeOutcome, StoreError> {
        self.apply_keyed(post, user, LikeOp::Toggle, Some(key))
            .await
    }

    async fn states(
        &self,
        posts: &[PostId],
        viewer: Option<UserId>,
    ) -> Result<Vec<LikeState>, StoreError> {
        if posts.is_empty() {
            return Ok(Vec::new());
        }
        if self.is_redis_down() {
            return pg::states(&self.pg, posts, viewer).await;
        }
        for attempt in 0..2 {
            // One pipelined round trip for the whole page. The partition's
            // version is read before the count (both in one slot, in
            // order): the count then reflects every change up to it, and
            // a push sent before this read has a version no newer.
            let mut reads = Spread::new();
            for &post in posts {
                let p = self.keys.partition(post);
                reads.cmd(p, "GET").arg(self.keys.seq(p));
                reads.cmd(p, "GET").arg(self.keys.count(post));
                reads
                    .cmd(p, "SISMEMBER")
                    .arg(self.keys.likers(post))
                    .arg(viewer.unwrap_or(-1));
            }
            let mut redis = self.redis.clone();
            let replies: Vec<(Option<i64>, bool, i64)> = match reads.query(&mut redis).await {
                Ok(values) => values
                    .chunks(3)
                    .map(|read| {
                        let version = redis::from_redis_value::<Option<i64>>(read[0].clone())
                            .unwrap_or(None)
                            .unwrap_or(0);
                        let count =
                            redis::from_redis_value::<Option<i64>>(read[1].clone()).unwrap_or(None);
                        let member =
                            redis::from_redis_value::<bool>(read[2].clone()).unwrap_or(false);
                        (count, member, version)
                    })
                    .collect(),
                // A read may come from PostgreSQL whatever the cause.
                Err(err) if err.is_timeout() => {
                    return pg::states(&self.pg, posts, viewer).await;
                }
                Err(err) if self.cluster && is_shard_trouble(&err) => {
                    return pg::states(&self.pg, posts, viewer).await;
                }
                Err(err) if is_unreachable(&err) => {
                    self.mark_down(&err);
                    return pg::states(&self.pg, posts, viewer).await;
                }
                Err(err) => {
                    return Err(StoreError::Internal(
                        anyhow::Error::new(err).context("feed counts"),
                    ));
                }
            };
            let cold: Vec<PostId> = posts
                .iter()
                .zip(&replies)
                .filter(|(_, r)| r.0.is_none())
                .map(|(p, _)| *p)
                .collect();
            if cold.is_empty() || attempt == 1 {
                return Ok(replies
                    .into_iter()
                    .map(|(count, member, version)| LikeState {
                        count: count.unwrap_or(0),
                        liked_by_viewer: member && viewer.is_some(),
                        // An unloaded post reads as zero: "unknown".
                        version: if count.is_some() { version } else { 0 },
                    })
                    .collect());
            }
            for post in cold {
                match self.load(post).await {
                    Ok(()) | Err(StoreError::PostNotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Err(StoreError::Internal(anyhow::anyhow!(
            "unreachable: states loop"
        )))
    }

    async fn trending(&self, window: TrendWindow, limit: usize) -> Result<Vec<Trend>, StoreError> {
        if self.is_redis_down() {
            return Err(StoreError::Unavailable(
                "trending needs Redis, which is unreachable".into(),
            ));
        }
        let mut redis = self.redis.clone();
        match self.trending_redis(window, limit, &mut redis).await {
            // After a Redis restart the pipelined EVALSHA finds no script.
            Err(err) if scripts::is_noscript(&err) => {
                scripts::load_all(&mut redis)
                    .await
                    .map_err(|e| self.redis_error(e))?;
                self.trending_redis(window, limit, &mut redis).await
            }
            other => other,
        }
        .map_err(|e| self.redis_error(e))
    }

    async fn health(&self) -> Health {
        if self.is_redis_down() {
            return Health::Degraded("redis unreachable: serving likes from PostgreSQL".into());
        }
        Health::Ready
    }

    async fn sync_status(&self) -> Result<SyncStatus, StoreError> {
        let mut redis = self.redis.clone();
        sync::status(&mut redis, &self.keys)
            .await
            .map_err(|e| self.redis_error(e))
    }
}
