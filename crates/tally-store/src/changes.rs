//! The change feed: how a backend announces that a post's count changed.
//!
//! The store owns this type and the layers above register on it (the live
//! hub pushes the counts to viewers), so the store never names what
//! listens. The embedded backend publishes each change once it is durable;
//! the production backend publishes what its Redis Pub/Sub reader receives
//! (changes made on every node of the deployment).
//!
//! Listeners are called in line, by the publisher, and must not block (the
//! live hub takes a std mutex for a map update). That is deliberate: a
//! queue between the two (a broadcast channel, tried first) costs every
//! like a second task wake-up on every node, 3.5 % and 6.4 % of the
//! production like path's throughput in two side-by-side runs on two cores
//! (docs/ARCHITECTURE.md), and a listener that falls behind a bounded queue
//! skips changes, which may be a post's last. Listeners are
//! held weakly, so registering cannot keep a listener (and whatever it
//! holds: stores, pools) alive.

use std::sync::{Arc, RwLock, Weak};

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

/// Something told of every change. Called on the publisher's task: return
/// at once (no I/O, no await, no lock held for long).
pub trait ChangeListener: Send + Sync {
    fn changed(&self, change: Change);

    /// Changes may have been missed (the production backend's Pub/Sub
    /// subscription was lost and is back): re-read what matters. Called
    /// on the publisher's task like [`Self::changed`]: spawn, do not wait.
    fn resync(&self) {}
}

/// The publishing side, cloned into every backend part that publishes;
/// clones share their listeners.
#[derive(Clone, Default)]
pub struct ChangeFeed {
    /// Written at registration only; read (uncontended) per change.
    listeners: Arc<RwLock<Vec<Weak<dyn ChangeListener>>>>,
}

impl ChangeFeed {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tells `listener` of every change from now on, while it lives.
    pub fn listen(&self, listener: Weak<dyn ChangeListener>) {
        if let Ok(mut listeners) = self.listeners.write() {
            listeners.retain(|l| l.strong_count() > 0);
            listeners.push(listener);
        }
    }

    /// Tells every living listener that changes may have been missed.
    pub fn resync(&self) {
        if let Ok(listeners) = self.listeners.read() {
            for listener in listeners.iter().filter_map(Weak::upgrade) {
                listener.resync();
            }
        }
    }

    /// Announces a change to every living listener.
    pub fn publish(&self, change: Change) {
        if let Ok(listeners) = self.listeners.read() {
            for listener in listeners.iter().filter_map(Weak::upgrade) {
                listener.changed(change);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Seen(Mutex<Vec<Change>>);

    impl ChangeListener for Seen {
        fn changed(&self, change: Change) {
            self.0.lock().unwrap().push(change);
        }
    }

    #[test]
    fn every_living_listener_hears_every_change_and_the_dead_are_dropped() {
        let feed = ChangeFeed::new();
        let (a, b) = (Arc::new(Seen::default()), Arc::new(Seen::default()));
        let a_dyn: Arc<dyn ChangeListener> = a.clone();
        let b_dyn: Arc<dyn ChangeListener> = b.clone();
        feed.listen(Arc::downgrade(&a_dyn));
        feed.clone().listen(Arc::downgrade(&b_dyn));
        let change = Change {
            post: 1,
            count: 2,
            version: 3,
        };
        feed.publish(change);
        drop((b, b_dyn));
        feed.publish(Change { count: 3, ..change });
        assert_eq!(
            a.0.lock().unwrap().len(),
            2,
            "a heard both, through a clone too"
        );
        feed.listen(Arc::downgrade(&a_dyn));
        assert_eq!(
            feed.listeners.read().unwrap().len(),
            2,
            "the dead listener was pruned"
        );
    }
}
