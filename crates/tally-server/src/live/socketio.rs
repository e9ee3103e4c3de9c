//! The Socket.io transport (protocol v5: the official `socket.io-client`
//! v3/v4 connects unchanged), through socketioxide.
//!
//! Client → server: `subscribe` and `unsubscribe` with an array of post ids
//! (or `{postIds: [...]}`). Server → client: `likeCount` `{postId,
//! likeCount, version}` — first the current count of each newly subscribed post, then
//! every (coalesced) change. Errors come as an `error` event `{code, message}`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};

use serde::Deserialize;
use socketioxide::SocketIo;
use socketioxide::extract::{Data, SocketRef, State};
use socketioxide::layer::SocketIoLayer;

use super::{LiveHub, MAX_SUBSCRIPTIONS};
use tally_store::domain::PostId;

pub fn room(post: PostId) -> String {
    format!("p:{post}")
}

/// The posts a socket watches (kept in the socket's extensions).
#[derive(Clone, Default)]
struct Watched(Arc<Mutex<HashSet<PostId>>>);

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

#[derive(serde::Serialize)]
struct ErrorEvent {
    code: &'static str,
    message: String,
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

/// Builds the Socket.io layer and registers the handlers.
pub fn layer(hub: Arc<LiveHub>, max_buffer: usize) -> SocketIoLayer {
    let (layer, io) = SocketIo::builder()
        .max_buffer_size(max_buffer)
        .with_state(HubRef(Arc::downgrade(&hub)))
        .build_layer();
    io.ns("/", on_connect);
    hub.set_socketio(io);
    layer
}

async fn on_connect(socket: SocketRef) {
    socket.extensions.insert(Watched::default());
    metrics::gauge!("tally_live_connections", "transport" => "socketio").increment(1.0);
    socket.on("subscribe", on_subscribe);
    socket.on("unsubscribe", on_unsubscribe);
    socket.on_disconnect(on_disconnect);
}

async fn on_subscribe(socket: SocketRef, Data(ids): Data<PostIds>, State(hub): State<HubRef>) {
    let Some(hub) = hub.get() else {
        return;
    };
    let Some(watched) = socket.extensions.get::<Watched>() else {
        return;
    };
    let new: Vec<PostId> = {
        let Ok(mut set) = watched.0.lock() else {
            return;
        };
        let new: Vec<PostId> = ids
            .into_vec()
            .into_iter()
            .filter(|p| !set.contains(p))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if set.len() + new.len() > MAX_SUBSCRIPTIONS {
            let _ = socket.emit(
                "error",
                &ErrorEvent {
                    code: "too_many_subscriptions",
                    message: format!("at most {MAX_SUBSCRIPTIONS} posts per connection"),
                },
            );
            return;
        }
        // Joined and watched under the lock: socketioxide runs handlers
        // concurrently, and an unsubscribe or disconnect in between would
        // otherwise leave a room or a watch behind.
        set.extend(&new);
        for &post in &new {
            socket.join(room(post));
            hub.watch(post);
        }
        new
    };
    for msg in hub.snapshot(&new).await {
        let _ = socket.emit("likeCount", &msg);
    }
}

async fn on_unsubscribe(socket: SocketRef, Data(ids): Data<PostIds>, State(hub): State<HubRef>) {
    let Some(hub) = hub.get() else {
        return;
    };
    let Some(watched) = socket.extensions.get::<Watched>() else {
        return;
    };
    let gone: Vec<PostId> = {
        let Ok(mut set) = watched.0.lock() else {
            return;
        };
        let gone: Vec<PostId> = ids
            .into_vec()
            .into_iter()
            .filter(|p| set.remove(p))
            .collect();
        for &post in &gone {
            socket.leave(room(post));
            hub.unwatch(post);
        }
        gone
    };
    let _ = gone;
}

async fn on_disconnect(socket: SocketRef, State(hub): State<HubRef>) {
    if let Some(hub) = hub.get()
        && let Some(watched) = socket.extensions.get::<Watched>()
        && let Ok(set) = watched.0.lock()
    {
        for &post in set.iter() {
            hub.unwatch(post);
        }
    }
    metrics::gauge!("tally_live_connections", "transport" => "socketio").decrement(1.0);
}
