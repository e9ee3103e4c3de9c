//! Reconciliation: finds drift between Redis and PostgreSQL and repairs it
//! from PostgreSQL, the durable truth.
//!
//! Three comparisons per post: Redis count vs Redis likers set, Redis likers
//! vs PostgreSQL `likes` rows, and `posts.like_count` vs those rows. Redis
//! and PostgreSQL are compared only when the post's partition is quiet (no
//! event in flight between reading one and the other), so a busy system is
//! never "repaired" into an older state: such posts are skipped and caught
//! by a later pass.

use std::collections::{BTreeSet, HashMap};

use crate::production::connection::{RedisConn, Spread};
use serde::Serialize;
use sqlx::{PgPool, Row};

use super::keys::Keys;
use super::scripts;

#[derive(Debug, Default, Clone, Serialize)]
pub struct DriftReport {
    pub posts_checked: u64,
    /// Partition busy during the check: compared again next pass.
    pub posts_skipped: u64,
    /// Redis count differs from the size of its likers set.
    pub redis_count_drift: u64,
    /// Redis likers differ from PostgreSQL's rows.
    pub redis_likers_drift: u64,
    /// `posts.like_count` differs from the rows.
    pub pg_count_drift: u64,
    pub repaired: u64,
    /// Drifted posts this pass left as they were (all of them without
    /// repair; with it, those whose repair lost a race with a new like).
    pub left: u64,
    /// The first differences, for people.
    pub details: Vec<String>,
}

impl DriftReport {
    pub fn drift(&self) -> u64 {
        self.redis_count_drift + self.redis_likers_drift + self.pg_count_drift
    }

    fn note(&mut self, detail: String) {
        if self.details.len() < 50 {
            self.details.push(detail);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
}

const PAGE: i64 = 200;

struct RedisView {
    count: Option<i64>,
    likers: BTreeSet<i64>,
    seq: i64,
    applied: i64,
}

/// Checks every post; with `repair`, fixes what it finds.
pub async fn reconcile(
    redis: &mut RedisConn,
    pg: &PgPool,
    keys: &Keys,
    repair: bool,
) -> Result<DriftReport, ReconcileError> {
    let mut report = DriftReport::default();
    let mut after = 0i64;
    loop {
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM posts WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(after)
                .bind(PAGE)
                .fetch_all(pg)
                .await?;
        let Some(&last) = ids.last() else { break };
        after = last;
        // Redis first, then PostgreSQL, then Redis's sequence again: if it
        // moved, something happened in between and the post is skipped.
        let views = read_redis(redis, keys, &ids).await?;
        let rows = sqlx::query(
            "SELECT p.id, p.like_count, \
                    COALESCE(array_agg(l.user_id) FILTER (WHERE l.liked), '{}') \
             FROM posts p LEFT JOIN likes l ON l.post_id = p.id \
             WHERE p.id = ANY($1) GROUP BY p.id",
        )
        .bind(&ids)
        .fetch_all(pg)
        .await?;
        let seqs_after = read_seqs(redis, keys, &ids).await?;
        for row in rows {
            let post: i64 = row.try_get(0)?;
            let like_count: i64 = row.try_get(1)?;
            let pg_likers: BTreeSet<i64> = row.try_get::<Vec<i64>, _>(2)?.into_iter().collect();
            report.posts_checked += 1;
            if like_count != pg_likers.len() as i64 {
                report.pg_count_drift += 1;
                report.note(format!(
                    "post {post}: posts.like_count {like_count} but {} likes rows",
                    pg_likers.len()
                ));
                if repair {
                    repair_count(pg, post).await?;
                    report.repaired += 1;
                } else {
                    report.left += 1;
                }
            }
            let Some(view) = views.get(&post) else {
                continue;
            };
            let Some(count) = view.count else { continue }; // not loaded: nothing to drift
            if view.seq > view.applied || seqs_after.get(&post) != Some(&view.seq) {
                report.posts_skipped += 1;
                continue;
            }
            let mut drifted = false;
            if count != view.likers.len() as i64 {
                report.redis_count_drift += 1;
                report.note(format!(
                    "post {post}: redis count {count} but {} in its likers set",
                    view.likers.len()
                ));
                drifted = true;
            }
            if view.likers != pg_likers {
                report.redis_likers_drift += 1;
                let extra = view.likers.difference(&pg_likers).count();
                let missing = pg_likers.difference(&view.likers).count();
                report.note(format!(
                    "post {post}: redis has {extra} likers postgres lacks, lacks {missing} it has"
                ));
                drifted = true;
            }
            if drifted && repair && replace(redis, keys, post, &pg_likers, view.seq).await? {
                report.repaired += 1;
            } else if drifted {
                report.left += 1;
            }
        }
    }
    metrics::counter!("tally_reconcile_drift_total", "kind" => "redis_count")
        .increment(report.redis_count_drift);
    metrics::counter!("tally_reconcile_drift_total", "kind" => "redis_likers")
        .increment(report.redis_likers_drift);
    metrics::counter!("tally_reconcile_drift_total", "kind" => "pg_count")
        .increment(report.pg_count_drift);
    metrics::counter!("tally_reconcile_repaired_total").increment(report.repaired);
    metrics::gauge!("tally_reconcile_last_drift").set(report.drift() as f64);
    metrics::gauge!("tally_reconcile_drift_left").set(report.left as f64);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    metrics::gauge!("tally_reconcile_last_run_timestamp_seconds").set(now);
    Ok(report)
}

async fn read_redis(
    redis: &mut RedisConn,
    keys: &Keys,
    ids: &[i64],
) -> Result<HashMap<i64, RedisView>, ReconcileError> {
    let mut reads = Spread::new();
    for &post in ids {
        let p = keys.partition(post);
        reads.cmd(p, "GET").arg(keys.count(post));
        reads.cmd(p, "SMEMBERS").arg(keys.likers(post));
        reads.cmd(p, "GET").arg(keys.seq(p));
        reads.cmd(p, "GET").arg(keys.applied(p));
    }
    let values = reads.query(redis).await?;
    let mut out = HashMap::with_capacity(ids.len());
    for (&post, v) in ids.iter().zip(values.chunks(4)) {
        out.insert(
            post,
            RedisView {
                count: redis::from_redis_value(v[0].clone()).unwrap_or(None),
                likers: redis::from_redis_value::<Vec<i64>>(v[1].clone())
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                seq: redis::from_redis_value::<Option<i64>>(v[2].clone())
                    .ok()
                    .flatten()
                    .unwrap_or(0),
                applied: redis::from_redis_value::<Option<i64>>(v[3].clone())
                    .ok()
                    .flatten()
                    .unwrap_or(0),
            },
        );
    }
    Ok(out)
}

async fn read_seqs(
    redis: &mut RedisConn,
    keys: &Keys,
    ids: &[i64],
) -> Result<HashMap<i64, i64>, ReconcileError> {
    let mut reads = Spread::new();
    for &post in ids {
        let p = keys.partition(post);
        reads.cmd(p, "GET").arg(keys.seq(p));
    }
    let seqs: Vec<Option<i64>> = reads.query_as(redis).await?;
    Ok(ids
        .iter()
        .copied()
        .zip(seqs.into_iter().map(|s| s.unwrap_or(0)))
        .collect())
}

/// Rebuilds a post's Redis state from PostgreSQL's likers, unless a like
/// happened in its partition since `seq` was read.
async fn replace(
    redis: &mut RedisConn,
    keys: &Keys,
    post: i64,
    likers: &BTreeSet<i64>,
    seq: i64,
) -> Result<bool, ReconcileError> {
    let members: Vec<i64> = likers.iter().copied().collect();
    Ok(
        scripts::install_likers(redis, keys, post, &members, scripts::InstallIf::SeqIs(seq))
            .await?,
    )
}

/// Sets a post's count from its rows. The post row is locked first (as every
/// writer of its likes does), so the count cannot miss a concurrent change.
async fn repair_count(pg: &PgPool, post: i64) -> Result<(), ReconcileError> {
    let mut tx = pg.begin().await?;
    sqlx::query("SELECT id FROM posts WHERE id = $1 FOR UPDATE")
        .bind(post)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE posts SET like_count = (SELECT COUNT(*) FROM likes WHERE post_id = $1 AND liked) WHERE id = $1")
        .bind(post)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
