//! The change feed: how a backend announces that a post's count changed.
//!
//! The store owns this type and the layers above subscribe to it (the live
//! hub pushes the counts to viewers), so the store never names what
//! listens. The embedded backend publishes each change once it is durable;
//! the production backend publishes what its Redis Pub/Sub reader receives
//! (changes made on every node of the deployment).
//!
//! A broadcast, so that any number of listeners can subscribe and a slow
//! one cannot stall the like path: a listener that falls more than the
//! capacity behind skips the oldest changes (it is told how many). Only the
//! newest count of a post matters, so such a listener re-reads the counts
//! it cares about from the store (the live hub does) instead of replaying.

use tokio::sync::broadcast;

use crate::domain::PostId;

/// A post's count after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub post: PostId,
    pub count: i64,
    /// Orders the changes of one post: a listener drops one older than
    /// what it has already seen (changes from several nodes may cross).
    pub version: i64,
}

/// Changes a listener may trail by before it skips some.
pub const CAPACITY: usize = 16 * 1024;

/// The sending side, cloned into every backend part that publishes.
#[derive(Clone)]
pub struct ChangeFeed {
    tx: broadcast::Sender<Change>,
}

impl Default for ChangeFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl ChangeFeed {
    pub fn new() -> Self {
        Self::with_capacity(CAPACITY)
    }

    /// A feed whose listeners skip changes once `capacity` behind.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity.max(1)).0,
        }
    }

    /// Announces a change; without listeners it goes nowhere.
    pub fn publish(&self, change: Change) {
        let _ = self.tx.send(change);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.tx.subscribe()
    }
}
