//! The group-committing SQLite writer behind [`super::EmbeddedLikes`].
//!
//! One task owns one connection and applies changes in the order they were
//! numbered. It takes everything queued (up to a batch limit) into one
//! transaction, so under load many likes share one commit and one fsync, and
//! a single like alone is committed at once (no timer, no added latency).
//! A failed commit is retried, never dropped: waiting operations time out
//! with 503 while the disk is broken, and their changes land once it heals.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::StoreError;
use crate::domain::{PostId, UserId};

/// One like-state change to persist: a row of `likes` present or gone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row {
    pub seq: u64,
    pub post: PostId,
    pub user: UserId,
    /// The new state: liked (row present) or not.
    pub liked: bool,
    pub at_ms: i64,
}

pub(crate) struct Writer {
    conn: SqliteConnection,
    rx: mpsc::UnboundedReceiver<Row>,
    max_batch: usize,
    committed: watch::Sender<u64>,
    error: watch::Sender<Option<String>>,
}

impl Writer {
    pub(crate) async fn connect(
        data_dir: &Path,
        rx: mpsc::UnboundedReceiver<Row>,
        max_batch: usize,
    ) -> Result<(Self, watch::Receiver<u64>, watch::Receiver<Option<String>>), StoreError> {
        let conn = SqliteConnection::connect_with(&super::connect_options(data_dir)?).await?;
        let (committed, committed_rx) = watch::channel(0);
        let (error, error_rx) = watch::channel(None);
        Ok((
            Self {
                conn,
                rx,
                max_batch: max_batch.max(1),
                committed,
                error,
            },
            committed_rx,
            error_rx,
        ))
    }

    /// Runs until `stop`, then refuses new changes (the like path answers
    /// 503 for them: nothing refused was acknowledged) and commits every
    /// change already queued before it returns.
    pub(crate) async fn run(
        mut self,
        stop: CancellationToken,
    ) -> Result<(), std::convert::Infallible> {
        let mut batch = Vec::with_capacity(self.max_batch);
        loop {
            tokio::select! {
                n = self.rx.recv_many(&mut batch, self.max_batch) => {
                    if n == 0 {
                        break;
                    }
                    let last = batch.last().map_or(0, |c| c.seq);
                    self.commit_until_done(&batch).await;
                    self.committed.send_replace(last);
                    batch.clear();
                }
                // Closing keeps what is queued for the loop to drain.
                () = stop.cancelled(), if !self.rx.is_closed() => self.rx.close(),
            }
        }
        tracing::info!("like writer drained");
        Ok(())
    }

    async fn commit_until_done(&mut self, batch: &[Row]) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let started = Instant::now();
            match apply_batch(&mut self.conn, batch).await {
                Ok(()) => {
                    metrics::histogram!("tally_group_commit_batch_size").record(batch.len() as f64);
                    metrics::histogram!("tally_group_commit_seconds")
                        .record(started.elapsed().as_secs_f64());
                    if self.error.borrow().is_some() {
                        tracing::info!("like writer recovered");
                        self.error.send_replace(None);
                    }
                    return;
                }
                Err(err) => {
                    tracing::error!(error = %err, batch = batch.len(), "like batch commit failed; retrying");
                    metrics::counter!("tally_group_commit_failures_total").increment(1);
                    self.error.send_replace(Some(err.to_string()));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Applies a batch in one transaction. Idempotent: replaying it changes
/// nothing, because each change sets a state rather than flipping it, and
/// the post's count moves only by the rows that actually changed.
async fn apply_batch(conn: &mut SqliteConnection, batch: &[Row]) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    let mut deltas: HashMap<PostId, i64> = HashMap::new();
    for change in batch {
        let affected = if change.liked {
            sqlx::query(
                "INSERT INTO likes (post_id, user_id, liked_at) VALUES (?, ?, ?) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(change.post)
            .bind(change.user)
            .bind(change.at_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected() as i64
        } else {
            -(sqlx::query("DELETE FROM likes WHERE post_id = ? AND user_id = ?")
                .bind(change.post)
                .bind(change.user)
                .execute(&mut *tx)
                .await?
                .rows_affected() as i64)
        };
        *deltas.entry(change.post).or_default() += affected;
    }
    for (post, delta) in deltas {
        if delta != 0 {
            sqlx::query("UPDATE posts SET like_count = like_count + ? WHERE id = ?")
                .bind(delta)
                .bind(post)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await
}
