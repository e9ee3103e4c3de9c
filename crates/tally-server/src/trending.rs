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
    slots: [tokio::sync::Mutex<Option<Ranking>>; 2],
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
        let slot = match window {
            TrendWindow::Hour => &self.slots[0],
            TrendWindow::Day => &self.slots[1],
        };
        let mut slot = slot.lock().await;
        if let Some(ranking) = slot.as_ref()
            && ranking.computed.elapsed() < self.ttl
        {
            return Ok(ranking.trends.clone());
        }
        let trends: Arc<[Trend]> = likes.trending(window, RANKED).await?.into();
        *slot = Some(Ranking {
            computed: Instant::now(),
            trends: trends.clone(),
        });
        Ok(trends)
    }
}
