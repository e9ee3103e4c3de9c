//! Cold loads: a post not in Redis (never touched, or dropped after an
//! outage) gets its likers set from PostgreSQL on first touch.

use std::sync::Arc;
use std::time::Instant;

use super::RedisLikes;
use crate::StoreError;
use crate::domain::PostId;
use crate::production::{pg, scripts};

impl RedisLikes {
    /// Loads a post's likers from PostgreSQL into Redis, once per node at
    /// a time; a caller that waited for another's load finds it done.
    pub(super) async fn load(&self, post: PostId) -> Result<(), StoreError> {
        let lock = self.loading.entry(post).or_default().clone();
        let result = async {
            let _one_loader = lock.lock().await;
            let loaded: bool = redis::cmd("EXISTS")
                .arg(self.keys.count(post))
                .query_async(&mut self.redis.clone())
                .await
                .map_err(|e| self.redis_error(e))?;
            if loaded {
                Ok(())
            } else {
                self.load_now(post).await
            }
        }
        .await;
        // Forget the lock once nobody else holds it (the map's reference
        // and ours); the shard lock makes the count stable here.
        self.loading
            .remove_if(&post, |_, l| Arc::strong_count(l) <= 2);
        result
    }

    /// Concurrent loaders on different nodes each build a scratch set; the
    /// install script keeps the first and discards the rest.
    async fn load_now(&self, post: PostId) -> Result<(), StoreError> {
        let started = Instant::now();
        // PostgreSQL must hold every event of the partition handed out so
        // far (an unloaded post gets no new ones: the script refuses it),
        // or the state loaded would miss events still in the stream.
        let partition = self.keys.partition(post);
        let seq: Option<i64> = redis::cmd("GET")
            .arg(self.keys.seq(partition))
            .query_async(&mut self.redis.clone())
            .await
            .map_err(|e| self.redis_error(e))?;
        self.wait_applied(post, seq.unwrap_or(0)).await?;
        let users = pg::likers_of(&self.pg, post)
            .await?
            .ok_or(StoreError::PostNotFound(post))?;
        scripts::install_likers(
            &mut self.redis.clone(),
            &self.keys,
            post,
            &users,
            scripts::InstallIf::NotLoaded,
        )
        .await
        .map_err(|e| self.redis_error(e))?;
        metrics::histogram!("tally_cold_load_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }
}
