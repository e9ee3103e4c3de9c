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
//! first.

pub mod socketio;
pub mod websocket;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use tally_store::domain::PostId;
use tally_store::{Change, ChangeFeed, Likes, Stage, Tasks};
use tokio::sync::{broadcast, mpsc};
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
    /// Where trailing pushes wait for their time.
    tasks: Tasks,
}

impl LiveHub {
    /// Starts the hub: it follows `changes` and pushes to both transports,
    /// at most `max_per_sec` times per post per second (per viewer). Its
    /// tasks stop with `tasks`' serving stage.
    pub fn start(
        likes: Arc<dyn Likes>,
        max_per_sec: u32,
        changes: &ChangeFeed,
        tasks: &Tasks,
    ) -> Arc<Self> {
        let (hub, pushes) = Self::new(likes, max_per_sec, tasks);
        let (follower, changes) = (hub.clone(), changes.subscribe());
        tasks.spawn(Stage::Serve, "live feed", move |stop| {
            follow(follower, changes, stop)
        });
        let pusher = hub.clone();
        tasks.spawn(Stage::Serve, "live pusher", move |stop| {
            push_loop(pusher, pushes, stop)
        });
        hub
    }

    /// The hub without its tasks, and the receiving end of its pushes.
    fn new(
        likes: Arc<dyn Likes>,
        max_per_sec: u32,
        tasks: &Tasks,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<LikeCount>) {
        let (pushes, rx) = mpsc::unbounded_channel();
        let hub = Arc::new(Self {
            interval: Duration::from_secs(1) / max_per_sec.max(1),
            slots: Mutex::new(HashMap::new()),
            pushes,
            websockets: websocket::Rooms::default(),
            socketio: OnceLock::new(),
            likes,
            tasks: tasks.clone(),
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

    /// Reads every watched post's count from the store and pushes it,
    /// unless a newer change of that post arrived meanwhile (after changes
    /// were skipped).
    pub async fn refresh_watched(&self) {
        let seen: Vec<(PostId, i64)> = match self.slots.lock() {
            Ok(slots) => slots.iter().map(|(p, s)| (*p, s.version)).collect(),
            Err(_) => return,
        };
        if seen.is_empty() {
            return;
        }
        let posts: Vec<PostId> = seen.iter().map(|(p, _)| *p).collect();
        let states = match self.likes.states(&posts, None).await {
            Ok(states) => states,
            Err(err) => {
                tracing::warn!(error = %err, "live: cannot re-read counts");
                return;
            }
        };
        let now = Instant::now();
        let msgs: Vec<LikeCount> = {
            let Ok(mut slots) = self.slots.lock() else {
                return;
            };
            seen.into_iter()
                .zip(states)
                .filter_map(|((post, version), state)| {
                    let slot = slots.get_mut(&post).filter(|s| s.version == version)?;
                    slot.count = state.count;
                    slot.last_sent = Some(now);
                    Some(LikeCount {
                        post_id: post,
                        like_count: state.count,
                    })
                })
                .collect()
        };
        for msg in msgs {
            let _ = self.pushes.send(msg);
        }
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

/// Feeds the store's changes into the hub until `stop`.
async fn follow(
    hub: Arc<LiveHub>,
    mut changes: broadcast::Receiver<Change>,
    stop: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(c) => hub.update(c.post, c.count, c.version),
                // A skipped change may have been a post's last: read every
                // watched count back rather than wait for a next change.
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "live: fell behind the change feed; re-reading counts");
                    metrics::counter!("tally_live_changes_skipped_total").increment(n);
                    hub.refresh_watched().await;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            () = stop.cancelled() => return Ok(()),
        }
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
    use tally_store::Catalog;
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

    /// A listener that falls behind the feed skips changes, and a skipped
    /// change may be a post's last: the hub then re-reads watched counts.
    #[tokio::test]
    async fn falling_behind_the_feed_re_reads_watched_counts() {
        let dir = tempfile::tempdir().unwrap();
        let pool = embedded::open(dir.path()).await.unwrap();
        let tasks = Tasks::new();
        let quiet = ChangeFeed::new();
        let likes = Arc::new(
            EmbeddedLikes::start(
                pool.clone(),
                dir.path(),
                LikesConfig::default(),
                quiet,
                &tasks,
            )
            .await
            .unwrap(),
        );
        let catalog = embedded::SqliteCatalog::new(pool);
        let users = catalog.seed_users("u", 3).await.unwrap();
        let post = catalog
            .create_post(tally_store::NewPost {
                author: users.first_id,
                caption: String::new(),
                image_file: "a.png".into(),
                thumb_file: "a.jpg".into(),
                width: 1,
                height: 1,
            })
            .await
            .unwrap()
            .id;
        for user in users.first_id..users.first_id + 3 {
            likes
                .apply(post, user, tally_store::LikeOp::Like)
                .await
                .unwrap();
        }
        let feed = ChangeFeed::with_capacity(4);
        let (hub, mut rx) = LiveHub::new(likes, 10, &tasks);
        let follower = tokio::spawn(follow(
            hub.clone(),
            feed.subscribe(),
            tasks.token(Stage::Serve),
        ));
        hub.watch(post);
        // Changes of an unwatched post overflow the feed before the
        // follower runs; none of the watched post's comes through.
        for version in 1..=20 {
            feed.publish(Change {
                post: post + 1,
                count: version,
                version,
            });
        }
        let pushed = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a push after the lag")
            .expect("hub alive");
        assert_eq!(
            (pushed.post_id, pushed.like_count),
            (post, 3),
            "the watched post's count, read from the store"
        );
        tasks.shutdown(Duration::from_secs(10)).await;
        follower.await.unwrap().unwrap();
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
