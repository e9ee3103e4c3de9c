//! Trending rankings, cached per node: one computation per window per
//! `trending_cache_ms` however many readers ask, then every page is cut
//! from the cached list.
//!
//! The store computes a ranking afresh on each call (on Redis, one script
//! per partition); a popular Trending tab would otherwise run that for
//! every page view.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_store::{Likes, StoreError, Trend, TrendWindow};

/// How many posts a cached ranking holds: pages go this deep.
pub const RANKED: usize = 1000;

/// One computed ranking and when it was computed.
struct Ranking {
    computed: Instant,
    trends: Arc<[Trend]>,
}

/// The cached rankings of one node, one slot per window.
pub struct TrendingCache {
    /// How long a ranking is served before it is computed again.
    ttl: Duration,
    /// A tokio mutex per window, held across the computation: concurrent
    /// readers of a stale ranking wait for the one computing it instead of
    /// each computing their own (single flight). A fresh ranking is only
    /// cloned (an `Arc`) under it.
    slots: [tokio::sync::Mutex<Slot>; 2],
}

/// A window's cached ranking, and when computing it last failed.
#[derive(Default)]
struct Slot {
    ranking: Option<Ranking>,
    /// For `ttl` after a failure (a shard failing over, say) readers get
    /// the last ranking, however old, or an error at once: one failing
    /// computation per `ttl`, not one per reader queued behind the lock.
    failed: Option<Instant>,
}

impl TrendingCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            slots: Default::default(),
        }
    }

    /// The window's ranking (best first, at most [`RANKED`] posts), at
    /// most `ttl` old.
    pub async fn ranking(
        &self,
        likes: &dyn Likes,
        window: TrendWindow,
    ) -> Result<Arc<[Trend]>, StoreError> {
        self.ranking_at(likes, window, Instant::now()).await
    }

    /// [`Self::ranking`] as seen at `now` (tests pass their own clock).
    async fn ranking_at(
        &self,
        likes: &dyn Likes,
        window: TrendWindow,
        now: Instant,
    ) -> Result<Arc<[Trend]>, StoreError> {
        let slot = match window {
            TrendWindow::Hour => &self.slots[0],
            TrendWindow::Day => &self.slots[1],
        };
        let mut slot = slot.lock().await;
        if let Some(ranking) = slot.ranking.as_ref()
            && now.saturating_duration_since(ranking.computed) < self.ttl
        {
            return Ok(ranking.trends.clone());
        }
        if slot
            .failed
            .is_some_and(|failed| now.saturating_duration_since(failed) < self.ttl)
        {
            return stale_or_unavailable(&slot);
        }
        match likes.trending(window, RANKED).await {
            Ok(trends) => {
                let trends: Arc<[Trend]> = trends.into();
                *slot = Slot {
                    ranking: Some(Ranking {
                        computed: now,
                        trends: trends.clone(),
                    }),
                    failed: None,
                };
                Ok(trends)
            }
            Err(err) => {
                tracing::warn!(error = %err, "trending: computing the ranking failed; serving the last one");
                slot.failed = Some(now);
                match slot.ranking {
                    Some(_) => stale_or_unavailable(&slot),
                    None => Err(err),
                }
            }
        }
    }
}

/// The last ranking computed, or `503` if there is none yet.
fn stale_or_unavailable(slot: &Slot) -> Result<Arc<[Trend]>, StoreError> {
    match &slot.ranking {
        Some(ranking) => Ok(ranking.trends.clone()),
        None => Err(StoreError::Unavailable(
            "trending cannot be computed right now; retry in a moment".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_store::domain::Username;
    use tally_store::embedded::{self, EmbeddedLikes, LikesConfig, SqliteCatalog};
    use tally_store::{Catalog, ChangeFeed, LikeOp, NewPost, Tasks};

    #[tokio::test]
    async fn one_computation_per_window_per_ttl_however_many_readers() {
        let dir = tempfile::tempdir().unwrap();
        let pool = embedded::open(dir.path()).await.unwrap();
        let catalog = SqliteCatalog::new(pool.clone());
        let tasks = Tasks::new();
        let likes = EmbeddedLikes::start(
            pool,
            dir.path(),
            LikesConfig::default(),
            ChangeFeed::new(),
            &tasks,
        )
        .await
        .unwrap();
        let user = catalog
            .create_user(&Username::parse("cache").unwrap(), "x")
            .await
            .unwrap();
        let mut posts = Vec::new();
        for _ in 0..2 {
            let post = catalog
                .create_post(NewPost {
                    author: user.id,
                    caption: String::new(),
                    image_file: "i".into(),
                    thumb_file: "t".into(),
                    width: 1,
                    height: 1,
                })
                .await
                .unwrap();
            posts.push(post.id);
        }
        let cache = TrendingCache::new(Duration::from_secs(1));
        let t0 = Instant::now();
        likes.apply(posts[0], user.id, LikeOp::Like).await.unwrap();
        let first = cache
            .ranking_at(&likes, TrendWindow::Hour, t0)
            .await
            .unwrap();
        assert_eq!(first.len(), 1);

        // Within the TTL the same ranking is served, new likes or not.
        likes.apply(posts[1], user.id, LikeOp::Like).await.unwrap();
        let later = t0 + Duration::from_millis(999);
        let cached = cache
            .ranking_at(&likes, TrendWindow::Hour, later)
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&first, &cached));
        // Each window has its own.
        let day = cache
            .ranking_at(&likes, TrendWindow::Day, later)
            .await
            .unwrap();
        assert_eq!(day.len(), 2);

        // Once it is a TTL old, concurrent readers share one computation.
        let at = t0 + Duration::from_secs(1);
        let readers = futures::future::join_all(
            (0..8).map(|_| cache.ranking_at(&likes, TrendWindow::Hour, at)),
        )
        .await;
        let fresh = readers[0].as_ref().unwrap().clone();
        assert_eq!(fresh.len(), 2);
        assert!(!Arc::ptr_eq(&first, &fresh));
        for r in &readers {
            assert!(Arc::ptr_eq(&fresh, r.as_ref().unwrap()), "one computation");
        }
    }
}
