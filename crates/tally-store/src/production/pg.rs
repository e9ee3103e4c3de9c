//! The PostgreSQL side of likes: applying the write-behind's batches, the
//! direct path used while Redis is down, and reads of the durable state.

use std::collections::HashMap;

use sqlx::{PgPool, Row};

use crate::domain::{PostId, UserId};
use crate::{LikeOp, LikeOutcome, LikeState, StoreError};

/// One change of a (post, user) like state, as recorded in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LikeEvent {
    pub post: PostId,
    pub user: UserId,
    pub liked: bool,
    /// Orders events of one (post, user): newer wins, whatever the order of
    /// arrival.
    pub version: i64,
    pub at_ms: i64,
}

/// A worker's right to commit a partition's events: the partition's stream
/// (its Redis key) and the epoch its lease was registered with
/// ([`take_fences`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub stream: String,
    pub epoch: i64,
}

/// What [`apply_events`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Committed; this many rows changed their liked state.
    Committed { changed: u64 },
    /// Rolled back, nothing written: a newer epoch holds these streams
    /// (another worker took their leases over).
    Fenced { streams: Vec<String> },
}

/// Registers a new lease epoch for each of `streams` (partitions a worker
/// just took the leases of) in one statement, one commit: from then on,
/// every batch carrying an older epoch for them is refused. A worker
/// taking every partition over after an outage must be done well
/// within a lease, or the first leases lapse again while it registers the
/// last ones (one commit each took ~80 ms on a busy machine: 16 partitions
/// outlived a 1 s lease, and the worker took them over forever). Locks the
/// rows in stream order, as [`apply_events`] does. Returns `(stream,
/// epoch)` pairs.
pub async fn take_fences(
    pool: &PgPool,
    streams: &[String],
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO sync_fence AS f (stream, epoch) \
         SELECT s, 1 FROM UNNEST($1::text[]) AS s ORDER BY s \
         ON CONFLICT (stream) DO UPDATE SET epoch = f.epoch + 1 RETURNING stream, epoch",
    )
    .bind(streams)
    .fetch_all(pool)
    .await
}

/// Applies a batch in one statement and one transaction, if `fences` (one
/// per stream the events come from) are still current.
///
/// Idempotent and order-proof: an event updates its row only if its
/// version is newer than the row's, so replays and reorderings are no-ops;
/// the post's count moves by exactly the rows whose liked state changed.
/// Events of one (post, user) are folded to the newest first, because one
/// `INSERT … ON CONFLICT DO UPDATE` may not touch a row twice.
///
/// Fenced: the last statement locks the streams' `sync_fence` rows and
/// checks that no newer epoch was registered; if one was, everything rolls
/// back. The lock is held until the commit, so a takeover either commits
/// before the check (and this batch is refused) or waits for this commit
/// (and this batch counts as the old owner's last).
pub async fn apply_events(
    pool: &PgPool,
    events: &[LikeEvent],
    fences: &[Fence],
) -> Result<Applied, sqlx::Error> {
    let mut newest: HashMap<(PostId, UserId), LikeEvent> = HashMap::with_capacity(events.len());
    for e in events {
        newest
            .entry((e.post, e.user))
            .and_modify(|cur| {
                if e.version > cur.version {
                    *cur = *e;
                }
            })
            .or_insert(*e);
    }
    let n = newest.len();
    let (mut posts, mut users, mut liked, mut versions, mut ats) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for e in newest.values() {
        posts.push(e.post);
        users.push(e.user);
        liked.push(e.liked);
        versions.push(e.version);
        ats.push(e.at_ms);
    }
    let mut tx = pool.begin().await?;
    // 0. Lock the posts, in id order: every writer of a post's likes (this
    //    batch, the Redis-down path, a repair) takes the post row first, so
    //    they serialise per post and never deadlock, and no one computes a
    //    count delta against a row another has inserted but not committed.
    let mut post_ids: Vec<PostId> = posts.clone();
    post_ids.sort_unstable();
    post_ids.dedup();
    sqlx::query("SELECT id FROM posts WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind(&post_ids)
        .execute(&mut *tx)
        .await?;
    // 1. Lock the rows and read their state before the batch. (A separate
    //    statement: within one statement, a CTE's FOR UPDATE skips rows the
    //    same statement's INSERT … ON CONFLICT already updated.)
    let before: HashMap<(PostId, UserId), bool> = sqlx::query(
        "SELECT l.post_id, l.user_id, l.liked FROM likes l \
         JOIN UNNEST($1::bigint[], $2::bigint[]) AS i(post_id, user_id) \
           ON l.post_id = i.post_id AND l.user_id = i.user_id \
         ORDER BY l.post_id, l.user_id FOR UPDATE OF l",
    )
    .bind(&posts)
    .bind(&users)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|r| Ok(((r.try_get(0)?, r.try_get(1)?), r.try_get(2)?)))
    .collect::<Result<_, sqlx::Error>>()?;
    // 2. Apply the events that are newer than their row.
    let updated = sqlx::query(
        "INSERT INTO likes AS l (post_id, user_id, liked, version, liked_at) \
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bool[], $4::bigint[], $5::bigint[]) \
         ON CONFLICT (post_id, user_id) DO UPDATE \
           SET liked = excluded.liked, version = excluded.version, \
               liked_at = CASE WHEN excluded.liked AND NOT l.liked \
                               THEN excluded.liked_at ELSE l.liked_at END \
           WHERE l.version < excluded.version \
         RETURNING l.post_id, l.user_id, l.liked",
    )
    .bind(&posts)
    .bind(&users)
    .bind(&liked)
    .bind(&versions)
    .bind(&ats)
    .fetch_all(&mut *tx)
    .await?;
    // 3. Move each post's count by the rows whose liked state changed.
    let mut deltas: HashMap<PostId, i64> = HashMap::new();
    let mut changed = 0u64;
    for row in &updated {
        let key: (PostId, UserId) = (row.try_get(0)?, row.try_get(1)?);
        let now: bool = row.try_get(2)?;
        let was = before.get(&key).copied().unwrap_or(false);
        if now != was {
            *deltas.entry(key.0).or_default() += if now { 1 } else { -1 };
            changed += 1;
        }
    }
    deltas.retain(|_, d| *d != 0);
    if !deltas.is_empty() {
        let (ids, amounts): (Vec<PostId>, Vec<i64>) = deltas.into_iter().unzip();
        sqlx::query(
            "UPDATE posts p SET like_count = p.like_count + d.amount \
             FROM UNNEST($1::bigint[], $2::bigint[]) AS d(id, amount) WHERE p.id = d.id",
        )
        .bind(&ids)
        .bind(&amounts)
        .execute(&mut *tx)
        .await?;
    }
    // 4. The fence, last: the rows stay locked only from here to the commit.
    let stale = stale_fences(&mut tx, fences).await?;
    if !stale.is_empty() {
        tx.rollback().await?;
        return Ok(Applied::Fenced { streams: stale });
    }
    tx.commit().await?;
    Ok(Applied::Committed { changed })
}

/// Locks the fences' rows (in stream order, so two batches never deadlock
/// on them) and returns the streams whose epoch is no longer current: a
/// newer one registered, or none at all (a worker never commits before it
/// registered, so a missing row means the table was emptied under it).
async fn stale_fences(
    tx: &mut sqlx::PgConnection,
    fences: &[Fence],
) -> Result<Vec<String>, sqlx::Error> {
    if fences.is_empty() {
        return Ok(Vec::new());
    }
    let (streams, epochs): (Vec<&str>, Vec<i64>) =
        fences.iter().map(|f| (f.stream.as_str(), f.epoch)).unzip();
    let current: std::collections::HashSet<String> = sqlx::query_scalar(
        "SELECT f.stream FROM sync_fence f \
         JOIN UNNEST($1::text[], $2::bigint[]) AS m(stream, epoch) ON f.stream = m.stream \
         WHERE f.epoch <= m.epoch ORDER BY f.stream FOR UPDATE OF f",
    )
    .bind(&streams)
    .bind(&epochs)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    Ok(streams
        .into_iter()
        .filter(|s| !current.contains(*s))
        .map(str::to_owned)
        .collect())
}

/// A like operation straight on PostgreSQL, for when Redis is down.
/// Slower (a transaction per like, serialised per post by the post's row
/// lock) but exact against what PostgreSQL holds.
pub async fn apply_direct(
    pool: &PgPool,
    post: PostId,
    user: UserId,
    op: LikeOp,
    now_ms: i64,
) -> Result<LikeOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    let count: Option<i64> =
        sqlx::query_scalar("SELECT like_count FROM posts WHERE id = $1 FOR UPDATE")
            .bind(post)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(count) = count else {
        return Err(StoreError::PostNotFound(post));
    };
    // The answer's version: PostgreSQL's clock in µs, read under the post's
    // row lock, so it grows per post (the operations of a post are
    // serialised). Comparable with Redis versions (Redis's clock in µs) as
    // far as the two clocks agree: docs/LIVE.md, "Versions".
    let (was, version): (Option<bool>, i64) = sqlx::query_as(
        "SELECT (SELECT liked FROM likes WHERE post_id = $1 AND user_id = $2), \
                (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
    )
    .bind(post)
    .bind(user)
    .fetch_one(&mut *tx)
    .await?;
    let was = was.unwrap_or(false);
    let now = op.apply(was);
    // The row is written even when nothing changed: its new version (the
    // PostgreSQL clock in µs, ahead of every version Redis handed out before
    // it went down) makes stream events still in flight from before the
    // outage older than this answer, so they cannot undo it when they land.
    sqlx::query(
        "INSERT INTO likes (post_id, user_id, liked, version, liked_at) \
         VALUES ($1, $2, $3, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, $4) \
         ON CONFLICT (post_id, user_id) DO UPDATE \
           SET liked = excluded.liked, \
               version = GREATEST(likes.version + 1, excluded.version), \
               liked_at = CASE WHEN excluded.liked AND NOT likes.liked \
                               THEN excluded.liked_at ELSE likes.liked_at END",
    )
    .bind(post)
    .bind(user)
    .bind(now)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    if now == was {
        tx.commit().await?;
        return Ok(LikeOutcome {
            liked: now,
            count,
            changed: false,
            version,
        });
    }
    let count: i64 = sqlx::query_scalar(
        "UPDATE posts SET like_count = like_count + $2 WHERE id = $1 RETURNING like_count",
    )
    .bind(post)
    .bind(if now { 1i64 } else { -1 })
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    // Live counts are not published while Redis is down.
    Ok(LikeOutcome {
        liked: now,
        count,
        changed: true,
        version,
    })
}

/// Counts and `likedByMe` from PostgreSQL, for when Redis is down (or
/// slow). Their version is 0, "unknown": a count read here may trail Redis
/// (the write-behind's lag), so it must never beat a push or an answer a
/// client already has (docs/LIVE.md, "Versions").
pub async fn states(
    pool: &PgPool,
    posts: &[PostId],
    viewer: Option<UserId>,
) -> Result<Vec<LikeState>, StoreError> {
    let rows = sqlx::query(
        "SELECT p.id, p.like_count, \
                EXISTS (SELECT 1 FROM likes l WHERE l.post_id = p.id AND l.user_id = $2 AND l.liked) \
         FROM posts p WHERE p.id = ANY($1)",
    )
    .bind(posts)
    .bind(viewer.unwrap_or(-1))
    .fetch_all(pool)
    .await?;
    let mut by_id = HashMap::with_capacity(rows.len());
    for r in rows {
        by_id.insert(
            r.try_get::<i64, _>(0)?,
            LikeState {
                count: r.try_get(1)?,
                liked_by_viewer: r.try_get(2)?,
                version: 0,
            },
        );
    }
    Ok(posts
        .iter()
        .map(|p| {
            by_id.get(p).copied().unwrap_or(LikeState {
                count: 0,
                liked_by_viewer: false,
                version: 0,
            })
        })
        .collect())
}

/// The likers of a post, for loading it into Redis. `None` if the post
/// does not exist.
pub async fn likers_of(pool: &PgPool, post: PostId) -> Result<Option<Vec<UserId>>, StoreError> {
    let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM posts WHERE id = $1")
        .bind(post)
        .fetch_optional(pool)
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let users: Vec<i64> =
        sqlx::query_scalar("SELECT user_id FROM likes WHERE post_id = $1 AND liked")
            .bind(post)
            .fetch_all(pool)
            .await?;
    Ok(Some(users))
}
