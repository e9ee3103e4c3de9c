//! Answers of keyed toggles (`Idempotency-Key`) kept in memory, for where
//! Redis cannot keep them: the embedded backend, and a production node
//! serving likes from PostgreSQL while Redis is down.
//!
//! Why in memory and per process: the embedded backend is one process, and
//! the production fallback is a degraded mode for seconds to minutes, not
//! worth a PostgreSQL table on the like path. What it costs is written in
//! docs/API.md: a retry that reaches another node during a fallback, or the
//! same process after a restart, flips again.
//!
//! Bounded twice: entries older than the retention are dropped, and past
//! `max_entries` the oldest go first (entries expire in insertion order,
//! since the retention is fixed).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::LikeOutcome;
use crate::domain::{IdempotencyKey, PostId, UserId};

type Entry = (PostId, UserId, IdempotencyKey);

/// Recent answers of keyed toggles, by (post, user, key).
pub struct ReplayCache {
    retention: Duration,
    max_entries: usize,
    /// A std mutex: held for map updates only, never across an await.
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    answers: HashMap<Entry, LikeOutcome>,
    /// Insertion order, with each entry's expiry.
    order: VecDeque<(Instant, Entry)>,
}

impl ReplayCache {
    pub fn new(retention: Duration, max_entries: usize) -> Self {
        Self {
            retention,
            max_entries: max_entries.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The answer given to `key` within the retention, if any.
    pub fn get(&self, post: PostId, user: UserId, key: &IdempotencyKey) -> Option<LikeOutcome> {
        let mut inner = self.inner.lock().ok()?;
        inner.expire(Instant::now());
        inner.answers.get(&(post, user, key.clone())).copied()
    }

    /// Keeps `outcome` as the answer to `key`.
    pub fn put(&self, post: PostId, user: UserId, key: &IdempotencyKey, outcome: LikeOutcome) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let now = Instant::now();
        inner.expire(now);
        while inner.answers.len() >= self.max_entries {
            let Some((_, oldest)) = inner.order.pop_front() else {
                break;
            };
            inner.answers.remove(&oldest);
        }
        let entry = (post, user, key.clone());
        if inner.answers.insert(entry.clone(), outcome).is_none() {
            inner.order.push_back((now + self.retention, entry));
        }
    }
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        while let Some((expiry, _)) = self.order.front() {
            if *expiry > now {
                break;
            }
            if let Some((_, entry)) = self.order.pop_front() {
                self.answers.remove(&entry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(count: i64) -> LikeOutcome {
        LikeOutcome {
            liked: true,
            count,
            changed: true,
            version: count,
        }
    }

    #[test]
    fn keeps_answers_until_they_expire_or_are_evicted() {
        let key = |k: &str| IdempotencyKey::parse(k).unwrap();
        let cache = ReplayCache::new(Duration::from_millis(50), 2);
        cache.put(1, 7, &key("a"), outcome(1));
        assert_eq!(cache.get(1, 7, &key("a")), Some(outcome(1)));
        assert_eq!(cache.get(1, 8, &key("a")), None, "per user");
        assert_eq!(cache.get(2, 7, &key("a")), None, "per post");
        cache.put(1, 7, &key("b"), outcome(2));
        cache.put(1, 7, &key("c"), outcome(3));
        assert_eq!(cache.get(1, 7, &key("a")), None, "the oldest was evicted");
        assert_eq!(cache.get(1, 7, &key("c")), Some(outcome(3)));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(1, 7, &key("c")), None, "expired");
    }
}
