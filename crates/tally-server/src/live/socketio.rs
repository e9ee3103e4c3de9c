//! The Socket.io transport (protocol v5: the official `socket.io-client`
//! v3/v4 connects unchanged), through socketioxide.
//!
//! Client → server: `subscribe` and `unsubscribe` with an array of post ids
//! (or `{postIds: [...]}`). Server → client: `likeCount` `{postId,
//! likeCount, version}` — first the current count of each newly subscribed post, then
//! every (coalesced) change. Errors come as an `error` event `{code, message}`;
//! a malformed `subscribe` or `unsubscribe` answers `invalid_request`.
//!
//! The limits of [`LiveLimits`] apply as on the plain WebSocket: a client
//! over the per-IP cap gets `connect_error` `too_many_connections`; the
//! message size is socketioxide's `max_payload` on long-polling and the
//! connection's frame guard on WebSocket (see [`crate::connections::io`]);
//! the ping interval and timeout are Engine.IO's own heartbeat.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use axum::extract::ConnectInfo;
use serde::Deserialize;
use socketioxide::SocketIo;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;

use super::LiveHub;
use super::limits::{LiveError, LiveLimits, SubscribeBucket};
use crate::config::Settings;
use crate::connections::{ConnectionSettings, IpCounter, IpSlot};
use tally_store::domain::PostId;

pub fn room(post: PostId) -> String {
    format!("p:{post}")
}

/// A socket's live state (kept in the socket's extensions): the posts it
/// watches and its subscribe budget. A std mutex: never held across an
/// await.
#[derive(Clone)]
struct Watched(Arc<Mutex<Conn>>);

struct Conn {
    posts: HashSet<PostId>,
    budget: SubscribeBucket,
}

/// The socket's place in the per-IP cap, given back on disconnect.
#[derive(Clone)]
struct LiveSlot(#[allow(dead_code)] Arc<IpSlot>);

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PostIds {
    List(Vec<PostId>),
    #[serde(rename_all = "camelCase")]
    Object {
        post_ids: Vec<PostId>,
    },
}

impl PostIds {
    fn into_vec(self) -> Vec<PostId> {
        match self {
            Self::List(ids) | Self::Object { post_ids: ids } => ids,
        }
    }
}

/// The hub as the handlers' state: weak, because the hub holds the
/// `SocketIo` (to push), and a strong reference back would be a cycle that
/// keeps the hub, its stores and their connections alive forever.
#[derive(Clone)]
struct HubRef(Weak<LiveHub>);

impl HubRef {
    fn get(&self) -> Option<Arc<LiveHub>> {
        self.0.upgrade()
    }
}

/// The limits, as the handlers' state.
#[derive(Clone)]
struct Limits(Arc<(LiveLimits, ConnectionSettings)>);

/// Builds the Socket.io layer and registers the handlers.
pub fn layer(hub: Arc<LiveHub>, settings: &Settings) -> SocketIoLayer {
    let live = settings.live_limits.clone();
    let (layer, io) = SocketIo::builder()
        .max_buffer_size(settings.live_socket_buffer)
        .max_payload(live.max_message_bytes)
        .ping_interval(live.ping_interval())
        .ping_timeout(live.ping_timeout())
        .with_state(HubRef(Arc::downgrade(&hub)))
        .with_state(Limits(Arc::new((live, settings.connections.clone()))))
        .build_layer();
    io.ns("/", on_connect.with(admit));
    hub.set_socketio(io);
    layer
}

/// The per-IP cap, checked before the socket joins the namespace, and the
/// socket's handlers. Registered here, not in the connect handler:
/// socketioxide sends the client its connect packet, then spawns the
/// (async) connect handler on a task of its own, so a client that
/// subscribed at once could be read before handlers registered there
/// existed, and its `subscribe` was silently dropped. The middleware runs
/// before the connect packet leaves.
async fn admit(
    socket: SocketRef,
    State(hub): State<HubRef>,
    State(limits): State<Limits>,
) -> Result<(), &'static str> {
    let (live, connections) = &*limits.0;
    let peer = socket
        .req_parts()
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let slot = match (peer, hub.get()) {
        (Some(ip), _) if connections.is_exempt(ip) => IpCounter::exempt(),
        (Some(ip), Some(hub)) => hub.per_ip.try_acquire(ip, live.max_per_ip).ok_or_else(|| {
            metrics::counter!("tally_live_refused_total", "reason" => "per_ip").increment(1);
            "too_many_connections"
        })?,
        _ => IpCounter::exempt(),
    };
    socket.extensions.insert(LiveSlot(Arc::new(slot)));
    socket.extensions.insert(Watched(Arc::new(Mutex::new(Conn {
        posts: HashSet::new(),
        budget: live.subscribe_bucket(),
    }))));
    metrics::gauge!("tally_live_connections", "transport" => "socketio").increment(1.0);
    socket.on("subscribe", on_subscribe);
    socket.on("unsubscribe", on_unsubscribe);
    socket.on_disconnect(on_disconnect);
    Ok(())
}

/// Everything happened in [`admit`].
async fn on_connect() {}

/// Waits (up to a second) until socketioxide marks the socket connected.
/// It sends the connect packet first and marks the socket a moment later;
/// on a busy machine a client's first `subscribe` can be handled in
/// between, and an emit then fails as if the socket were closed.
async fn connected(socket: &SocketRef) {
    for _ in 0..100 {
        if socket.connected() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn emit_error(socket: &SocketRef, error: LiveError) {
    connected(socket).await;
    let _ = socket.emit("error", &error);
}

async fn on_subscribe(
    socket: SocketRef,
    TryData(ids): TryData<PostIds>,
    State(hub): State<HubRef>,
    State(limits): State<Limits>,
) {
    let ids = match ids {
        Ok(ids) => ids.into_vec(),
        Err(err) => {
            return emit_error(
                &socket,
                LiveError::invalid(format!(
                    "subscribe takes an array of post ids or {{postIds: [...]}}: {err}"
                )),
            )
            .await;
        }
    };
    let Some(hub) = hub.get() else {
        return;
    };
    let Some(watched) = socket.extensions.get::<Watched>() else {
        return;
    };
    let live = &limits.0.0;
    let new: Result<Vec<PostId>, LiveError> = {
        let Ok(mut conn) = watched.0.lock() else {
            return;
        };
        let new: Vec<PostId> = ids
            .into_iter()
            .filter(|p| !conn.posts.contains(p))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if conn.posts.len() + new.len() > live.max_watched {
            Err(live.too_many())
        } else if let Err(limited) = conn.budget.take(new.len()) {
            Err(limited)
        } else {
            // Joined and watched under the lock: socketioxide runs handlers
            // concurrently, and an unsubscribe or disconnect in between would
            // otherwise leave a room or a watch behind.
            conn.posts.extend(&new);
            for &post in &new {
                socket.join(room(post));
                hub.watch(post);
            }
            Ok(new)
        }
    };
    let new = match new {
        Ok(new) => new,
        Err(refused) => return emit_error(&socket, refused).await,
    };
    let counts = hub.snapshot(&new).await;
    connected(&socket).await;
    for msg in counts {
        let _ = socket.emit("likeCount", &msg);
    }
}

async fn on_unsubscribe(
    socket: SocketRef,
    TryData(ids): TryData<PostIds>,
    State(hub): State<HubRef>,
) {
    let ids = match ids {
        Ok(ids) => ids.into_vec(),
        Err(err) => {
            return emit_error(
                &socket,
                LiveError::invalid(format!(
                    "unsubscribe takes an array of post ids or {{postIds: [...]}}: {err}"
                )),
            )
            .await;
        }
    };
    let Some(hub) = hub.get() else {
        return;
    };
    let Some(watched) = socket.extensions.get::<Watched>() else {
        return;
    };
    let Ok(mut conn) = watched.0.lock() else {
        return;
    };
    for post in ids {
        if conn.posts.remove(&post) {
            socket.leave(room(post));
            hub.unwatch(post);
        }
    }
}

async fn on_disconnect(socket: SocketRef, State(hub): State<HubRef>) {
    if let Some(hub) = hub.get()
        && let Some(watched) = socket.extensions.get::<Watched>()
        && let Ok(conn) = watched.0.lock()
    {
        for &post in conn.posts.iter() {
            hub.unwatch(post);
        }
    }
    socket.extensions.remove::<LiveSlot>();
    metrics::gauge!("tally_live_connections", "transport" => "socketio").decrement(1.0);
}
