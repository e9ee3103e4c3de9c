//! The embedded like engine: in-process dedup and counts, made durable by a
//! group-committing SQLite writer before any answer goes out.
//!
//! Each post has a cell holding its likers set, loaded from SQLite on first
//! touch. An operation locks the cell, decides, mutates, and enqueues the
//! change for the writer while still holding the lock, so changes to one post
//! reach the writer in the order they were decided. Every change gets a
//! sequence number from one counter, taken together with the enqueue, so the
//! writer commits in sequence order and can publish a single watermark: "all
//! changes up to N are on disk". An operation answers only once the
//! watermark passes the last change of its post, including operations that
//! changed nothing (a repeated like must not claim a state that a crash could
//! still undo).
//!
//! Versions (docs/LIVE.md): a change's version is the process's start time
//! in microseconds plus its sequence number, so versions grow per post
//! within a run and across restarts (a run hands out fewer than one
//! version per microsecond of its life). A post loaded from disk starts at
//! the run's base: newer than anything an earlier run sent, older than any
//! change of this run.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use sqlx::SqlitePool;
use tokio::sync::{OnceCell, mpsc, watch};

use super::writer::{Row, Writer};
use crate::domain::{IdempotencyKey, PostId, UserId};
use crate::now_ms;
use crate::replay::ReplayCache;
use crate::trending::Buckets;
use crate::{Change, ChangeFeed, Stage, Tasks, Trend, TrendWindow};
use crate::{Health, LikeOp, LikeOutcome, LikeState, Likes, StoreError, SyncStatus};

/// Tuning of the embedded like path.
#[derive(Debug, Clone)]
pub struct LikesConfig {
    /// Most changes committed in one SQLite transaction.
    pub max_batch: usize,
    /// How long an operation waits for its commit before answering 503.
    pub ack_timeout: Duration,
    /// How long a keyed toggle's answer is kept for its retries.
    pub idempotency_retention: Duration,
    /// Most keyed toggle answers kept (the oldest go first).
    pub idempotency_max_keys: usize,
}

impl Default for LikesConfig {
    fn default() -> Self {
        Self {
            max_batch: 4096,
            ack_timeout: Duration::from_secs(10),
            idempotency_retention: Duration::from_secs(600),
            idempotency_max_keys: 100_000,
        }
    }
}

/// One post's like state. Held in memory for the life of the process: a
/// post's likers set is a few bytes per like.
#[derive(Default)]
struct PostCell {
    /// Loaded from SQLite once; `OnceCell` makes concurrent first touches
    /// share one load instead of racing.
    state: OnceCell<Mutex<PostLikes>>,
}

struct PostLikes {
    likers: HashSet<UserId>,
    /// Sequence number of the last change enqueued for this post (0: none).
    last_seq: u64,
    /// The version of the current state (the run's base until a change).
    version: i64,
}

/// Sequence numbering and enqueueing, done under one lock so the writer
/// receives changes in sequence order.
struct Outbox {
    next_seq: u64,
    tx: mpsc::UnboundedSender<Row>,
}

/// The embedded implementation of [`Likes`].
pub struct EmbeddedLikes {
    cells: DashMap<PostId, Arc<PostCell>>,
    /// Reads likers sets on first touch (the writer has its own connection).
    pool: SqlitePool,
    /// A std mutex, not a tokio one: held only to number and enqueue a
    /// change, with no await inside.
    outbox: Mutex<Outbox>,
    /// The highest sequence number committed to disk.
    committed: watch::Receiver<u64>,
    /// `Some(error)` while the writer is failing to commit.
    writer_error: watch::Receiver<Option<String>>,
    /// Where durable changes are announced (live counts listen).
    changes: ChangeFeed,
    config: LikesConfig,
    /// Likes gained per minute and per hour, for trending. A std mutex:
    /// held for a map update per change (no await inside), taken after the
    /// post's lock, never before it.
    trends: Mutex<Buckets>,
    /// Versions of this run are `version_base + seq`.
    version_base: i64,
    /// Answers of keyed toggles, for their retries.
    replays: ReplayCache,
}

impl EmbeddedLikes {
    /// Starts the engine on the database in `data_dir`, and its writer
    /// on `tasks` (it stops last, after committing everything accepted).
    pub async fn start(
        pool: SqlitePool,
        data_dir: &std::path::Path,
        config: LikesConfig,
        changes: ChangeFeed,
        tasks: &Tasks,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (writer, committed, writer_error) =
            Writer::connect(data_dir, rx, config.max_batch).await?;
        tasks.spawn(Stage::Persist, "like writer", move |stop| writer.run(stop));
        let replays = ReplayCache::new(config.idempotency_retention, config.idempotency_max_keys);
        Ok(Self {
            version_base: now_us(),
            replays,
            cells: DashMap::new(),
            pool,
            outbox: Mutex::new(Outbox { next_seq: 1, tx }),
            committed,
            writer_error,
            changes,
            config,
            trends: Mutex::new(Buckets::default()),
        })
    }

    /// The post's cell, loading it from SQLite on first touch.
    async fn cell(&self, post: PostId) -> Result<Arc<PostCell>, StoreError> {
        loop {
            let cell = self.cells.entry(post).or_default().clone();
            let loaded = cell
                .state
                .get_or_try_init(|| load_post(&self.pool, post, self.version_base))
                .await;
            match loaded {
                // Still the post's cell? A concurrent failed load may have
                // removed it while this caller's load ran; then start over,
                // so that no two cells of one post are ever in use.
                Ok(_)
                    if self
                        .cells
                        .get(&post)
                        .is_some_and(|c| Arc::ptr_eq(&c, &cell)) =>
                {
                    return Ok(cell);
                }
                Ok(_) => continue,
                Err(err) => {
                    // Do not keep cells for posts that do not exist: random
                    // ids would otherwise grow the map without bound. Other
                    // errors keep the (empty) cell; the next call retries.
                    if matches!(err, StoreError::PostNotFound(_)) {
                        self.cells.remove_if(&post, |_, c| {
                            Arc::ptr_eq(c, &cell) && c.state.get().is_none()
                        });
                    }
                    return Err(err);
                }
            }
        }
    }

    /// Numbers and enqueues a change. Called with the post's lock held.
    fn enqueue(&self, post: PostId, user: UserId, liked: bool) -> Result<u64, StoreError> {
        let mut outbox = self
            .outbox
            .lock()
            .map_err(|_| StoreError::Internal(anyhow::anyhow!("like outbox lock poisoned")))?;
        let seq = outbox.next_seq;
        outbox
            .tx
            .send(Row {
                seq,
                post,
                user,
                liked,
                at_ms: now_ms(),
            })
            .map_err(|_| StoreError::Unavailable("like writer stopped".into()))?;
        outbox.next_seq += 1;
        Ok(seq)
    }

    /// Waits until everything up to `seq` is on disk.
    async fn durable(&self, seq: u64) -> Result<(), StoreError> {
        if seq == 0 || *self.committed.borrow() >= seq {
            return Ok(());
        }
        let mut committed = self.committed.clone();
        match tokio::time::timeout(self.config.ack_timeout, committed.wait_for(|c| *c >= seq)).await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(StoreError::Unavailable("like writer stopped".into())),
            // The change stays queued and will still be written: the outcome
            // is unknown to the client, which must read the state back.
            Err(_) => Err(StoreError::Unavailable(
                "durable store did not acknowledge in time".into(),
            )),
        }
    }
}

async fn load_post(
    pool: &SqlitePool,
    post: PostId,
    version_base: i64,
) -> Result<Mutex<PostLikes>, StoreError> {
    let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM posts WHERE id = ?")
        .bind(post)
        .fetch_optional(pool)
        .await?;
    if exists.is_none() {
        return Err(StoreError::PostNotFound(post));
    }
    let likers: Vec<i64> = sqlx::query_scalar("SELECT user_id FROM likes WHERE post_id = ?")
        .bind(post)
        .fetch_all(pool)
        .await?;
    Ok(Mutex::new(PostLikes {
        likers: likers.into_iter().collect(),
        last_seq: 0,
        version: version_base,
    }))
}

/// Microseconds since the Unix epoch.
fn now_us() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000) as i64
}

fn poisoned() -> StoreError {
    StoreError::Internal(anyhow::anyhow!("post like state lock poisoned"))
}

impl EmbeddedLikes {
    /// Applies `op`; with `key`, a toggle answered before is answered
    /// again instead (checked and recorded under the post's lock, so two
    /// concurrent tries of one key flip once).
    async fn apply_keyed(
        &self,
        post: PostId,
        user: UserId,
        op: LikeOp,
        key: Option<&IdempotencyKey>,
    ) -> Result<LikeOutcome, StoreError> {
        let cell = self.cell(post).await?;
        let state = cell.state.get().ok_or_else(poisoned)?;
        let (outcome, wait_for) = {
            let mut likes = state.lock().map_err(|_| poisoned())?;
            if let Some(answer) = key.and_then(|k| self.replays.get(post, user, k)) {
                // A retry answers what the first try did, once what it
                // repeats is durable (no new change: no publish below).
                (
                    LikeOutcome {
                        changed: false,
                        ..answer
                    },
                    likes.last_seq,
                )
            } else {
                let was = likes.likers.contains(&user);
                let now = op.apply(was);
                if now != was {
                    let seq = self.enqueue(post, user, now)?;
                    if now {
                        likes.likers.insert(user);
                    } else {
                        likes.likers.remove(&user);
                    }
                    likes.last_seq = seq;
                    likes.version = self.version_base + seq as i64;
                    // Counted when decided, like the count itself.
                    self.trends.lock().map_err(|_| poisoned())?.record(
                        post,
                        if now { 1 } else { -1 },
                        now_ms(),
                    );
                }
                let outcome = LikeOutcome {
                    liked: now,
                    count: likes.likers.len() as i64,
                    changed: now != was,
                    version: likes.version,
                };
                if let Some(key) = key {
                    self.replays.put(post, user, key, outcome);
                }
                (outcome, likes.last_seq)
            }
        };
        self.durable(wait_for).await?;
        if outcome.changed {
            self.changes.publish(Change {
                post,
                count: outcome.count,
                version: outcome.version,
            });
        }
        Ok(outcome)
    }
}

#[async_trait]
impl Likes for EmbeddedLikes {
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
        let mut out = Vec::with_capacity(posts.len());
        for &post in posts {
            let state = match self.cell(post).await {
                Ok(cell) => {
                    let likes = cell
                        .state
                        .get()
                        .ok_or_else(poisoned)?
                        .lock()
                        .map_err(|_| poisoned())?;
                    LikeState {
                        count: likes.likers.len() as i64,
                        liked_by_viewer: viewer.is_some_and(|v| likes.likers.contains(&v)),
                        version: likes.version,
                    }
                }
                Err(StoreError::PostNotFound(_)) => LikeState {
                    count: 0,
                    liked_by_viewer: false,
                    version: 0,
                },
                Err(e) => return Err(e),
            };
            out.push(state);
        }
        Ok(out)
    }

    async fn trending(&self, window: TrendWindow, limit: usize) -> Result<Vec<Trend>, StoreError> {
        Ok(self
            .trends
            .lock()
            .map_err(|_| poisoned())?
            .top(window, now_ms(), limit))
    }

    async fn health(&self) -> Health {
        match self.writer_error.borrow().as_ref() {
            Some(err) => Health::Down(format!("embedded store cannot commit: {err}")),
            None => Health::Ready,
        }
    }

    /// Changes numbered but not yet committed. Each waits for its commit
    /// before it is answered, so nothing acknowledged is ever behind: the
    /// lag is 0 by construction.
    async fn sync_status(&self) -> Result<SyncStatus, StoreError> {
        let numbered = self
            .outbox
            .lock()
            .map_or(0, |o| o.next_seq.saturating_sub(1));
        Ok(SyncStatus {
            backlog: numbered.saturating_sub(*self.committed.borrow()),
            lag_ms: 0.0,
        })
    }
}
