//! Live counts: every change of a post's count reaches the clients
//! watching that post, over Socket.io and plain WebSocket, coalesced per
//! post so a post liked thousands of times a second sends each viewer a
//! few updates a second.
//!
//! Where changes come from: the store's [`ChangeFeed`]. The embedded
//! backend announces each change once it is durable; the production
//! backend announces what Redis Pub/Sub brings from every node, so a like
//! on any node reaches viewers on every node. Pub/Sub is at-most-once: a
//! client that reconnects subscribes again and gets the current counts
//! first, and when this node's own subscription was lost and is back, the
//! hub re-sends the current count of every watched post ([`LiveHub::resync`]).
//!
//! Every count carries its version (monotonic per post): clients keep the
//! newest of snapshots, pushes and like answers (docs/LIVE.md, "Versions").

pub mod limits;
pub mod socketio;
pub mod websocket;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use tally_store::domain::PostId;
use tally_store::{Change, ChangeFeed, ChangeListener, Likes, Stage, Tasks};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most posts one connection may watch at once.
pub const MAX_SUBSCRIPTIONS: usize = 500;

/// The push message, the same on both transports.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LikeCount {
    pub post_id: PostId,
    pub like_count: i64,
    /// The count's version: a client ignores a count older than the one
    /// it shows (0: unknown, older than any other).
    pub version: i64,
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
    /// Live connections per client IP, both transports (see [`limits`]).
    pub per_ip: Arc<crate::connections::IpCounter>,
    /// Where trailing pushes wait for their time.
    tasks: Tasks,
    /// Itself, for the trailing pushes' timers (which must not keep the
    /// hub alive).
    me: std::sync::Weak<LiveHub>,
}

impl LiveHub {
    /// Starts the hub: it listens to `changes` and pushes to both
    /// transports, at most `max_per_sec` times per post per second (per
    /// viewer). Its pusher stops with `tasks`' serving stage.
    pub fn start(
        likes: Arc<dyn Likes>,
        max_per_sec: u32,
        changes: &ChangeFeed,
        tasks: &Tasks,
    ) -> Arc<Self> {
        let (hub, pushes) = Self::new(likes, max_per_sec, tasks);
        let listener: Arc<dyn ChangeListener> = hub.clone();
        changes.listen(Arc::downgrade(&listener));
        let pusher = hub.clone();
        tasks.spawn(Stage::Serve, "live pusher", move |stop| {
            push_loop(pusher, pushes, stop)
        });
        hub
    }

    /// The hub without its pusher, and the receiving end of its pushes.
    fn new(
        likes: Arc<dyn Likes>,
        max_per_sec: u32,
        tasks: &Tasks,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<LikeCount>) {
        let (pushes, rx) = mpsc::unbounded_channel();
        let hub = Arc::new_cyclic(|me| Self {
            interval: Duration::from_secs(1) / max_per_sec.max(1),
            slots: Mutex::new(HashMap::new()),
            pushes,
            websockets: websocket::Rooms::default(),
            socketio: OnceLock::new(),
            likes,
            per_ip: Arc::default(),
            tasks: tasks.clone(),
            me: me.clone(),
        });
        (hub, rx)
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
    pub fn update(&self, post: PostId, count: i64, version: i64) {
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
                let hub = self.me.clone();
                self.tasks.spawn_quiet(Stage::Serve, async move {
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
                version,
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
                version: slot.version,
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
                    version: s.version,
                })
                .collect(),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read counts for live subscribers");
                Vec::new()
            }
        }
    }

    /// Changes may have been missed (this node's Pub/Sub subscription was
    /// lost and is back): re-reads every watched post and pushes its count
    /// to its viewers, even if unchanged (a viewer keeps the newest by
    /// version, so a repeat costs nothing but the message).
    pub fn resync(&self) {
        let Some(hub) = self.me.upgrade() else {
            return;
        };
        self.tasks.spawn_quiet(Stage::Serve, async move {
            let posts: Vec<PostId> = match hub.slots.lock() {
                Ok(slots) => slots.keys().copied().collect(),
                Err(_) => return,
            };
            tracing::info!(
                posts = posts.len(),
                "live: re-sending watched counts after a lost subscription"
            );
            // In pages, like a client's subscribe.
            for page in posts.chunks(MAX_SUBSCRIPTIONS) {
                for msg in hub.snapshot(page).await {
                    hub.resend(msg);
                }
            }
        });
    }

    /// Pushes `msg` now unless the hub has seen a newer count of the post.
    fn resend(&self, msg: LikeCount) {
        {
            let Ok(mut slots) = self.slots.lock() else {
                return;
            };
            let Some(slot) = slots.get_mut(&msg.post_id) else {
                return;
            };
            if msg.version < slot.version {
                return;
            }
            slot.count = msg.like_count;
            slot.version = msg.version;
            slot.last_sent = Some(Instant::now());
        }
        let _ = self.pushes.send(msg);
        metrics::counter!("tally_live_resent_total").increment(1);
    }
}

impl ChangeListener for LiveHub {
    fn changed(&self, change: Change) {
        self.update(change.post, change.count, change.version);
    }

    fn resync(&self) {
        LiveHub::resync(self);
    }
}

/// Delivers pushes to both transports until `stop`.
async fn push_loop(
    hub: Arc<LiveHub>,
    mut rx: mpsc::UnboundedReceiver<LikeCount>,
    stop: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    loop {
        let msg = tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => msg,
                None => return Ok(()),
            },
            () = stop.cancelled() => return Ok(()),
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use tally_store::embedded::{self, EmbeddedLikes, LikesConfig};

    /// A hub at 10 pushes per post per second (a 100 ms interval) on a
    /// real embedded store, then paused time: timers fire only when the
    /// test advances the clock.
    async fn paused_hub() -> (
        Arc<LiveHub>,
        mpsc::UnboundedReceiver<LikeCount>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let pool = embedded::open(dir.path()).await.unwrap();
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
        let (hub, rx) = LiveHub::new(Arc::new(likes), 10, &tasks);
        tokio::time::pause();
        (hub, rx, dir)
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<LikeCount>) -> Vec<i64> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|m| m.like_count)
            .collect()
    }

    /// Lets spawned timers run after the clock moved.
    async fn advance(by: Duration) {
        tokio::time::advance(by).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_quiet_post_pushes_at_once() {
        let (hub, mut rx, _dir) = paused_hub().await;
        hub.watch(1);
        hub.update(1, 5, 10);
        assert_eq!(drain(&mut rx), [5], "leading edge: no wait");
        advance(Duration::from_millis(150)).await;
        hub.update(1, 6, 11);
        assert_eq!(drain(&mut rx), [6], "quiet again after an interval");
    }

    #[tokio::test]
    async fn a_burst_sends_its_newest_count_once_per_interval() {
        let (hub, mut rx, _dir) = paused_hub().await;
        hub.watch(1);
        for (count, version) in (1..=50).zip(100..) {
            hub.update(1, count, version);
        }
        assert_eq!(drain(&mut rx), [1], "the first goes at once, the rest wait");
        advance(Duration::from_millis(50)).await;
        assert_eq!(drain(&mut rx), Vec::<i64>::new(), "not before the interval");
        advance(Duration::from_millis(60)).await;
        assert_eq!(drain(&mut rx), [50], "one trailing push with the newest");
        advance(Duration::from_secs(1)).await;
        assert_eq!(drain(&mut rx), Vec::<i64>::new(), "nothing more");
    }

    #[tokio::test]
    async fn changes_on_the_feed_reach_the_hub() {
        let dir = tempfile::tempdir().unwrap();
        let pool = embedded::open(dir.path()).await.unwrap();
        let tasks = Tasks::new();
        let feed = ChangeFeed::new();
        let likes = EmbeddedLikes::start(
            pool,
            dir.path(),
            LikesConfig::default(),
            feed.clone(),
            &tasks,
        )
        .await
        .unwrap();
        let hub = LiveHub::start(Arc::new(likes), 10, &feed, &tasks);
        hub.watch(7);
        feed.publish(Change {
            post: 7,
            count: 4,
            version: 1,
        });
        let slot_count = hub.slots.lock().unwrap()[&7].count;
        assert_eq!(slot_count, 4, "the hub heard the change in line");
        tasks.shutdown(Duration::from_secs(10)).await;
    }

    #[tokio::test]
    async fn older_versions_and_unwatched_posts_push_nothing() {
        let (hub, mut rx, _dir) = paused_hub().await;
        hub.update(2, 9, 1);
        assert_eq!(drain(&mut rx), Vec::<i64>::new(), "nobody watches post 2");
        hub.watch(1);
        hub.update(1, 7, 20);
        hub.update(1, 6, 19);
        advance(Duration::from_millis(500)).await;
        assert_eq!(drain(&mut rx), [7], "version 19 is older than 20");
        hub.unwatch(1);
        hub.update(1, 8, 21);
        assert_eq!(drain(&mut rx), Vec::<i64>::new(), "no longer watched");
    }
}
