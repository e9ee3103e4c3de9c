//! The plain WebSocket transport, `GET /v1/live`.
//!
//! Client → server: `{"type": "subscribe", "postIds": [1, 2]}`,
//! `{"type": "unsubscribe", "postIds": [1]}`, and `{"type": "ping"}` (a
//! browser cannot see WebSocket ping frames: its heartbeat is a message,
//! answered `{"type": "pong"}`).
//! Server → client: `{"type": "likeCount", "postId": 1, "likeCount": 5,
//! "version": 1764571234567890}`,
//! and `{"type": "error", "code": "...", "message": "..."}`.
//!
//! Each connection has a mailbox holding the newest count per post, not a
//! queue: a slow client gets the latest counts when it catches up and never
//! makes the server buffer without bound (at most one entry per watched
//! post) or slows anyone else.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use dashmap::DashMap;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::{LikeCount, LiveHub, MAX_SUBSCRIPTIONS};
use crate::state::AppState;
use tally_store::domain::PostId;

/// Largest accepted client message.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A connection's pending pushes: the newest message per post, already
/// serialised (a push to a room is encoded once and shared by reference
/// count, not once per subscriber).
#[derive(Default)]
pub struct Mailbox {
    /// A std mutex: no await while held. Per post: version and frame.
    pending: Mutex<HashMap<PostId, (i64, Utf8Bytes)>>,
    ready: Notify,
}

impl Mailbox {
    /// Keeps the newer of `frame` and what is pending for the post (a
    /// snapshot read before a push must not replace it).
    fn put(&self, post: PostId, version: i64, frame: Utf8Bytes) {
        if let Ok(mut pending) = self.pending.lock() {
            match pending.get(&post) {
                Some((newer, _)) if *newer > version => {}
                _ => {
                    pending.insert(post, (version, frame));
                }
            }
        }
        self.ready.notify_one();
    }

    fn take(&self) -> Vec<Utf8Bytes> {
        self.pending
            .lock()
            .map(|mut p| p.drain().map(|(_, (_, frame))| frame).collect())
            .unwrap_or_default()
    }
}

fn encode(msg: &ServerMessage) -> Utf8Bytes {
    serde_json::to_string(msg).unwrap_or_default().into()
}

fn like_count_frame(msg: LikeCount) -> Utf8Bytes {
    encode(&ServerMessage::LikeCount {
        post_id: msg.post_id,
        like_count: msg.like_count,
        version: msg.version,
    })
}

/// Which WebSocket connections watch which post.
#[derive(Default)]
pub struct Rooms {
    rooms: DashMap<PostId, HashMap<u64, Arc<Mailbox>>>,
    next_id: AtomicU64,
}

impl Rooms {
    pub(super) fn push(&self, msg: LikeCount) {
        if let Some(room) = self.rooms.get(&msg.post_id) {
            let frame = like_count_frame(msg);
            for mailbox in room.values() {
                mailbox.put(msg.post_id, msg.version, frame.clone());
            }
        }
    }

    fn join(&self, post: PostId, conn: u64, mailbox: &Arc<Mailbox>) {
        self.rooms
            .entry(post)
            .or_default()
            .insert(conn, mailbox.clone());
    }

    fn leave(&self, post: PostId, conn: u64) {
        self.rooms.remove_if_mut(&post, |_, room| {
            room.remove(&conn);
            room.is_empty()
        });
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum ClientMessage {
    #[serde(rename_all = "camelCase")]
    Subscribe {
        post_ids: Vec<PostId>,
    },
    #[serde(rename_all = "camelCase")]
    Unsubscribe {
        post_ids: Vec<PostId>,
    },
    Ping,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum ServerMessage {
    #[serde(rename_all = "camelCase")]
    LikeCount {
        post_id: PostId,
        like_count: i64,
        version: i64,
    },
    Error {
        code: &'static str,
        message: String,
    },
    Pong,
}

/// Live counts over a plain WebSocket.
#[utoipa::path(get, path = "/v1/live", tag = "live",
    responses((status = 101, description = "WebSocket; see docs/LIVE.md for the messages")))]
pub async fn live(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    let hub = state.live.clone();
    // Small buffers: the messages are tens of bytes, and tungstenite's
    // 128 KiB default read buffer would cost that much per idle subscriber.
    upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve(socket, hub))
}

async fn serve(socket: WebSocket, hub: Arc<LiveHub>) {
    let conn = hub.websockets.next_id.fetch_add(1, Ordering::Relaxed);
    let mailbox = Arc::new(Mailbox::default());
    let mut watched: HashSet<PostId> = HashSet::new();
    let (mut tx, mut rx) = socket.split();
    metrics::gauge!("tally_live_connections", "transport" => "websocket").increment(1.0);

    let writer_mailbox = mailbox.clone();
    let (errors_tx, mut errors_rx) = tokio::sync::mpsc::channel::<ServerMessage>(8);
    // The writer owns the sending half: pushes and error replies.
    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = writer_mailbox.ready.notified() => {
                    // Queue every pending frame, then one flush (one write).
                    for frame in writer_mailbox.take() {
                        if tx.feed(Message::Text(frame)).await.is_err() {
                            return;
                        }
                    }
                    if tx.flush().await.is_err() {
                        return;
                    }
                }
                Some(err) = errors_rx.recv() => {
                    if send(&mut tx, &err).await.is_err() {
                        return;
                    }
                }
                else => return,
            }
        }
    });

    while let Some(Ok(message)) = rx.next().await {
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => break,
            _ => continue,
        };
        let parsed: Result<ClientMessage, _> = serde_json::from_str(&text);
        let reply = match parsed {
            Ok(ClientMessage::Subscribe { post_ids }) => {
                // Deduplicated: a repeated id must not be watched twice.
                let new: Vec<PostId> = post_ids
                    .into_iter()
                    .filter(|p| !watched.contains(p))
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .collect();
                if watched.len() + new.len() > MAX_SUBSCRIPTIONS {
                    Some(ServerMessage::Error {
                        code: "too_many_subscriptions",
                        message: format!("at most {MAX_SUBSCRIPTIONS} posts per connection"),
                    })
                } else {
                    for &post in &new {
                        watched.insert(post);
                        hub.watch(post);
                        hub.websockets.join(post, conn, &mailbox);
                    }
                    for msg in hub.snapshot(&new).await {
                        mailbox.put(msg.post_id, msg.version, like_count_frame(msg));
                    }
                    None
                }
            }
            Ok(ClientMessage::Unsubscribe { post_ids }) => {
                for post in post_ids {
                    if watched.remove(&post) {
                        hub.websockets.leave(post, conn);
                        hub.unwatch(post);
                    }
                }
                None
            }
            Ok(ClientMessage::Ping) => Some(ServerMessage::Pong),
            Err(err) => Some(ServerMessage::Error {
                code: "invalid_request",
                message: err.to_string(),
            }),
        };
        if let Some(reply) = reply
            && errors_tx.try_send(reply).is_err()
        {
            break; // the client sends garbage faster than it reads
        }
    }

    for post in watched {
        hub.websockets.leave(post, conn);
        hub.unwatch(post);
    }
    writer.abort();
    metrics::gauge!("tally_live_connections", "transport" => "websocket").decrement(1.0);
}

async fn send(
    tx: &mut futures::stream::SplitSink<WebSocket, Message>,
    msg: &ServerMessage,
) -> Result<(), axum::Error> {
    tx.send(Message::Text(encode(msg))).await
}
