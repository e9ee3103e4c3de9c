//! Live counts: every change of a post's count reaches the clients
//! watching that post, over Socket.io and plain WebSocket, coalesced per
//! post so a post liked thousands of times a second sends each viewer a
//! few updates a second.
//!
//! Where changes come from: on the embedded backend the like handler feeds
//! [`LiveHub::update`] directly; on the production backend the like script
//! publishes each change on Redis Pub/Sub and every node's
//! [`pubsub::subscribe_loop`] feeds its own hub, so a like on any node
//! reaches viewers on every node. Pub/Sub is at-most-once: a client that
//! reconnects subscribes again and gets the current counts first.

pub mod pubsub;
pub mod socketio;
pub mod websocket;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::domain::PostId;
use crate::store::Likes;

/// Most posts one connection may watch at once.
pub const MAX_SUBSCRIPTIONS: usize = 500;

/// The push message, the same on both transports.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LikeCount {
    pub post_id: PostId,
    pub like_count: i64,
}

/// Per watched post: the newest count and when it was last pushed.
struct Slot {
    /// Local subscribers (both transports).
    watchers: usize,
    count: i64,
    /// Orders updates that may arrive out of order (from several nodes).
    version: i64,
    /// When the last push left; `None` if never.
    last_sent: Option<Instant>,
    /// A trailing push is already scheduled.
    scheduled: bool,
}

/// The per-node fan-out point of live counts.
pub struct LiveHub {
    interval: Duration,
    /// A std mutex: held for map updates only, never across an await.
    slots: Mutex<HashMap<PostId, Slot>>,
    /// Pushes leave through one task, so callers never wait on sockets.
    pushes: mpsc::UnboundedSender<LikeCount>,
    /// Plain WebSocket subscribers.
    pub websockets: websocket::Rooms,
    /// The Socket.io handle, set once the layer is built.
    socketio: OnceLock<socketioxide::SocketIo>,
    /// Reads current counts for snapshots on subscribe.
    pub likes: Arc<dyn Likes>,
}

impl LiveHub {
    /// `max_per_sec`: most pushes per post per second (per viewer).
    pub fn start(likes: Arc<dyn Likes>, max_per_sec: u32) -> Arc<Self> {
        let (pushes, rx) = mpsc::unbounded_channel();
        let hub = Arc::new(Self {
            interval: Duration::from_secs(1) / max_per_sec.max(1),
            slots: Mutex::new(HashMap::new()),
            pushes,
            websockets: websocket::Rooms::default(),
            socketio: OnceLock::new(),
            likes,
        });
        tokio::spawn(push_loop(Arc::downgrade(&hub), rx));
        hub
    }

    pub fn set_socketio(&self, io: socketioxide::SocketIo) {
        let _ = self.socketio.set(io);
    }

    /// A connection starts watching `post`.
    pub fn watch(&self, post: PostId) {
        if let Ok(mut slots) = self.slots.lock() {
            slots
                .entry(post)
                .or_insert(Slot {
                    watchers: 0,
                    count: -1,
                    version: i64::MIN,
                    last_sent: None,
                    scheduled: false,
                })
                .watchers += 1;
        }
        metrics::gauge!("tally_live_subscriptions").increment(1.0);
    }

    /// A connection stops watching `post`.
    pub fn unwatch(&self, post: PostId) {
        if let Ok(mut slots) = self.slots.lock()
            && let Some(slot) = slots.get_mut(&post)
        {
            slot.watchers = slot.watchers.saturating_sub(1);
            if slot.watchers == 0 && !slot.scheduled {
                slots.remove(&post);
            }
        }
        metrics::gauge!("tally_live_subscriptions").decrement(1.0);
    }

    /// A post's count changed (`version` orders changes of one post).
    ///
    /// Leading edge: a post that pushed nothing in the last interval pushes
    /// at once, so a quiet post's like reaches viewers in milliseconds.
    /// Trailing edge: a busy post pushes its newest count at the end of the
    /// interval, so viewers are at most one interval behind.
    pub fn update(self: &Arc<Self>, post: PostId, count: i64, version: i64) {
        let now = Instant::now();
        let push_now = {
            let Ok(mut slots) = self.slots.lock() else {
                return;
            };
            // Nobody watches this post on this node: nothing to do.
            let Some(slot) = slots.get_mut(&post) else {
                return;
            };
            if version <= slot.version {
                return;
            }
            slot.count = count;
            slot.version = version;
            if slot.scheduled {
                false
            } else if slot
                .last_sent
                .is_none_or(|t| now.duration_since(t) >= self.interval)
            {
                slot.last_sent = Some(now);
                true
            } else {
                slot.scheduled = true;
                let at = slot.last_sent.map_or(now, |t| t + self.interval);
                let hub = Arc::downgrade(self);
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    if let Some(hub) = hub.upgrade() {
                        hub.flush(post);
                    }
                });
                false
            }
        };
        if push_now {
            let _ = self.pushes.send(LikeCount {
                post_id: post,
                like_count: count,
            });
        }
    }

    /// The trailing push of a busy post.
    fn flush(&self, post: PostId) {
        let msg = {
            let Ok(mut slots) = self.slots.lock() else {
                return;
            };
            let Some(slot) = slots.get_mut(&post) else {
                return;
            };
            slot.scheduled = false;
            slot.last_sent = Some(Instant::now());
            let msg = LikeCount {
                post_id: post,
                like_count: slot.count,
            };
            if slot.watchers == 0 {
                slots.remove(&post);
            }
            msg
        };
        let _ = self.pushes.send(msg);
    }

    /// Current counts, for a client that just subscribed.
    pub async fn snapshot(&self, posts: &[PostId]) -> Vec<LikeCount> {
        match self.likes.states(posts, None).await {
            Ok(states) => posts
                .iter()
                .zip(states)
                .map(|(&post_id, s)| LikeCount {
                    post_id,
                    like_count: s.count,
                })
                .collect(),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read counts for live subscribers");
                Vec::new()
            }
        }
    }
}

/// Delivers pushes to both transports. Ends when the hub is gone.
async fn push_loop(hub: std::sync::Weak<LiveHub>, mut rx: mpsc::UnboundedReceiver<LikeCount>) {
    while let Some(msg) = rx.recv().await {
        let Some(hub) = hub.upgrade() else { return };
        hub.websockets.push(msg);
        if let Some(io) = hub.socketio.get() {
            // A socket whose buffer is full drops this push (its newest
            // count comes with the next one): slow clients skip stale
            // counts instead of stalling the others.
            let _ = io
                .to(socketio::room(msg.post_id))
                .emit("likeCount", &msg)
                .await;
        }
        metrics::counter!("tally_live_pushes_total").increment(1);
    }
}
