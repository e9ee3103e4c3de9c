//! Failover: the node answers likes from PostgreSQL while Redis is
//! unreachable, and returns to Redis once it is back and the write-behind
//! has drained what Redis still held.
//!
//! Requests switch over by themselves on a refused or broken connection;
//! [`watch_redis`] switches over on a Redis that hangs (two unanswered
//! pings) and switches back.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::RedisLikes;
use crate::domain::PostId;
use crate::production::{Production, Spread, sync};

/// Whether an error shows Redis unreachable, so that this node switches to
/// PostgreSQL. A timeout does not: one slow reply (a stall, or this node's
/// own queue under a burst) says nothing certain, and the command may still
/// run, so its caller answers 503 (outcome unknown); the watcher in
/// `production::watch_redis` switches over when Redis stops answering its
/// pings.
pub(super) fn is_unreachable(err: &redis::RedisError) -> bool {
    !err.is_timeout()
        && (matches!(
            err.code(),
            Some("LOADING" | "READONLY" | "MASTERDOWN" | "TRYAGAIN")
        ) || err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_unrecoverable_error())
}

/// On a cluster: whether an error is one shard in trouble (a master that
/// died and whose replica is not yet promoted, a slot moving, redirections
/// the client gave up following). The cluster heals by itself in seconds;
/// the request answers 503, and the node stays on Redis (only a cluster
/// whose every master is silent switches it to PostgreSQL, in the watch).
pub(super) fn is_shard_trouble(err: &redis::RedisError) -> bool {
    is_unreachable(err)
        || matches!(
            err.kind(),
            redis::ErrorKind::ClusterConnectionNotFound
                | redis::ErrorKind::Server(
                    redis::ServerErrorKind::ClusterDown
                        | redis::ServerErrorKind::Moved
                        | redis::ServerErrorKind::Ask
                )
        )
}

impl RedisLikes {
    pub fn is_redis_down(&self) -> bool {
        self.redis_down.load(Ordering::Acquire)
    }

    /// Switches this node to PostgreSQL until Redis is back and drained.
    pub fn mark_down(&self, err: &redis::RedisError) {
        if !self.redis_down.swap(true, Ordering::AcqRel) {
            tracing::error!(error = %err, "Redis unreachable: likes go straight to PostgreSQL");
            metrics::gauge!("tally_redis_fallback").set(1.0);
        }
    }

    /// Called by the recovery task once Redis answers again and the stream
    /// backlog has drained: drops the stale state of posts changed while
    /// Redis was down (they reload from PostgreSQL on next touch), then
    /// returns to the fast path.
    pub async fn recover(&self) -> Result<(), redis::RedisError> {
        let _no_fallback_in_flight = self.fallback_gate.write().await;
        let touched: Vec<PostId> = self
            .touched_while_down
            .lock()
            .map(|mut t| t.drain().collect())
            .unwrap_or_default();
        let mut redis = self.redis.clone();
        let mut drop = Spread::new();
        for &post in &touched {
            let p = self.keys.partition(post);
            drop.cmd(p, "DEL")
                .arg(self.keys.count(post))
                .arg(self.keys.likers(post));
        }
        // Nothing to drop still checks that Redis answers.
        let dropped = match drop.is_empty() {
            true => {
                redis
                    .ping(Duration::from_secs(1), &self.keys.probes())
                    .await
            }
            false => drop.query(&mut redis).await.map(|_| ()),
        };
        if let Err(err) = dropped {
            // Put them back: the next attempt must drop them too.
            if let Ok(mut t) = self.touched_while_down.lock() {
                t.extend(touched);
            }
            return Err(err);
        }
        self.redis_down.store(false, Ordering::Release);
        metrics::gauge!("tally_redis_fallback").set(0.0);
        tracing::info!(posts = touched.len(), "Redis is back: fast path restored");
        Ok(())
    }
}

/// A new cluster client for the node's connection and its `WAIT`
/// connections (bounded: a dead cluster must not hold the watch).
async fn renew(production: &Production) {
    let wait = Duration::from_millis(production.settings.redis_timeout_ms.max(1)) * 4;
    for conn in std::iter::once(&production.redis).chain(&production.waiters) {
        match tokio::time::timeout(wait, conn.renew()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "cannot renew the cluster client"),
            Err(_) => tracing::warn!("renewing the cluster client timed out"),
        }
    }
}

/// Pings Redis four times a second. While it is up: two pings in a row
/// without an answer switch the node to PostgreSQL (a hung Redis; a
/// refused connection switches requests over by itself). On a cluster a
/// ping is answered while any master answers, and only pings failing for
/// `cluster_down_after_ms` switch: a master's failover stalls the client
/// for seconds (the cluster's node timeout and more), and riding it out
/// with 503s on that shard beats moving every like to PostgreSQL and back.
/// While it is down:
/// waits for it to answer, for the write-behind to drain what it still
/// holds, then returns the node to the fast path.
pub(in crate::production) async fn watch_redis(
    production: Production,
    likes: Option<Arc<RedisLikes>>,
    stop: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    let mut redis = production.redis.clone();
    let wait = Duration::from_millis(production.settings.redis_timeout_ms.max(1));
    let probes = production.keys.probes();
    let cluster_down_after = Duration::from_millis(production.settings.cluster_down_after_ms);
    let mut failed_pings = 0u32;
    let mut failing_since: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.cancelled() => return Ok(()),
        }
        let ping = redis.ping(wait, &probes).await;
        let err = match ping {
            Ok(()) => {
                failed_pings = 0;
                failing_since = None;
                if let Some(likes) = likes.as_ref().filter(|l| l.is_redis_down()) {
                    recover_when_drained(&production, likes).await;
                }
                continue;
            }
            Err(err) => err,
        };
        failed_pings += 1;
        let since = *failing_since.get_or_insert_with(std::time::Instant::now);
        if redis.is_cluster() && failed_pings.is_multiple_of(2) {
            // Two pings in a row without an answer from any master: a
            // stalled client (see `connection::Cluster`) more likely than a
            // dead cluster. A new one for every user of the connection (the
            // write-behind's too, also in `tally worker`).
            tracing::warn!(error = %err, "no Redis Cluster master answers; renewing the cluster client");
            renew(&production).await;
        }
        // Requests only switch over on a refused or broken connection; a
        // Redis that hangs is seen here: two pings in a row without an
        // answer (each waits `redis_timeout_ms`); a cluster, only after
        // `cluster_down_after_ms`.
        let down = match redis.is_cluster() {
            false => failed_pings >= 2,
            true => since.elapsed() >= cluster_down_after,
        };
        if down && let Some(likes) = &likes {
            likes.mark_down(&err);
        }
    }
}

/// While the node serves from PostgreSQL and Redis answers again: returns
/// to the fast path once the write-behind drained what Redis still held.
async fn recover_when_drained(production: &Production, likes: &RedisLikes) {
    let mut redis = production.redis.clone();
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
