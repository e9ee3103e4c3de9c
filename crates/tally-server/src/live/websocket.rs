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
//!
//! Limits ([`LiveLimits`]): live connections per IP (429 before the
//! upgrade), posts watched, a subscribe budget, the message size, and a
//! ping every `ping_interval_ms`: a client that sends nothing (no pong) for
//! `ping_interval_ms + ping_timeout_ms` is closed, so a dead peer does not
//! hold a socket and its subscriptions.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::net::SocketAddr;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::limits::{LiveError, LiveLimits};
use super::{LikeCount, LiveHub};
use crate::connections::{IpCounter, IpSlot};
use crate::error::ApiError;
use crate::state::AppState;
use tally_store::domain::PostId;

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

impl From<LiveError> for ServerMessage {
    fn from(e: LiveError) -> Self {
        Self::Error {
            code: e.code,
            message: e.message,
        }
    }
}

/// A place in the per-IP cap of live connections, or the 429 answer.
pub(crate) fn live_slot(state: &AppState, peer: SocketAddr) -> Result<IpSlot, ApiError> {
    if state.settings.connections.is_exempt(peer.ip()) {
        return Ok(IpCounter::exempt());
    }
    state
        .live
        .per_ip
        .try_acquire(peer.ip(), state.settings.live_limits.max_per_ip)
        .ok_or_else(|| {
            metrics::counter!("tally_live_refused_total", "reason" => "per_ip").increment(1);
            ApiError::TooManyConnections("too many live connections from this address".into())
        })
}

/// Live counts over a plain WebSocket.
#[utoipa::path(get, path = "/v1/live", tag = "live",
    responses(
        (status = 101, description = "WebSocket; see docs/LIVE.md for the messages"),
        (status = 429, description = "Too many live connections from this address", body = crate::error::ErrorBody),
    ))]
pub async fn live(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let slot = match live_slot(&state, peer) {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    let hub = state.live.clone();
    let limits = state.settings.live_limits.clone();
    // Small buffers: the messages are tens of bytes, and tungstenite's
    // 128 KiB default read buffer would cost that much per idle subscriber.
    upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(limits.max_message_bytes as usize)
        .max_frame_size(limits.max_message_bytes as usize)
        .on_upgrade(move |socket| serve(socket, hub, limits, slot))
}

async fn serve(socket: WebSocket, hub: Arc<LiveHub>, limits: LiveLimits, _slot: IpSlot) {
    let conn = hub.websockets.next_id.fetch_add(1, Ordering::Relaxed);
    let mailbox = Arc::new(Mailbox::default());
    let mut watched: HashSet<PostId> = HashSet::new();
    let mut budget = limits.subscribe_bucket();
    let (mut tx, mut rx) = socket.split();
    metrics::gauge!("tally_live_connections", "transport" => "websocket").increment(1.0);

    let writer_mailbox = mailbox.clone();
    let (errors_tx, mut errors_rx) = tokio::sync::mpsc::channel::<ServerMessage>(8);
    let ping_every = limits.ping_interval();
    // The writer owns the sending half: pushes, error replies and pings.
    let writer = tokio::spawn(async move {
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
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
                _ = ping.tick() => {
                    if tx.send(Message::Ping(Default::default())).await.is_err() {
                        return;
                    }
                }
                else => return,
            }
        }
    });

    // Anything from the client (a pong too) proves it alive; silence past
    // a ping's deadline closes the connection.
    let silence = limits.ping_interval() + limits.ping_timeout();
    // Messages read while a subscribe's snapshot was being fetched.
    let mut pending: VecDeque<Message> = VecDeque::new();
    loop {
        let message = match pending.pop_front() {
            Some(message) => message,
            None => match tokio::time::timeout(silence, rx.next()).await {
                Ok(Some(Ok(message))) => message,
                Ok(_) => break,
                Err(_) => {
                    metrics::counter!("tally_live_ping_timeouts_total", "transport" => "websocket")
                        .increment(1);
                    break;
                }
            },
        };
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
                if watched.len() + new.len() > limits.max_watched {
                    Some(limits.too_many().into())
                } else if let Err(limited) = budget.take(new.len()) {
                    Some(limited.into())
                } else {
                    for &post in &new {
                        watched.insert(post);
                        hub.watch(post);
                        hub.websockets.join(post, conn, &mailbox);
                    }
                    // The snapshot reads the store (a 500-post one takes
                    // ~145 ms on Redis + PostgreSQL): read on meanwhile, so
                    // a client that leaves is noticed now, not after every
                    // queued snapshot (its socket sat in CLOSE_WAIT for
                    // seconds). A client more than `max_pending_messages`
                    // ahead is closed.
                    let snapshot = hub.snapshot(&new);
                    tokio::pin!(snapshot);
                    let counts = loop {
                        tokio::select! {
                            counts = &mut snapshot => break Some(counts),
                            next = rx.next() => match next {
                                Some(Ok(message))
                                    if !matches!(message, Message::Close(_))
                                        && pending.len() < limits.max_pending_messages =>
                                {
                                    pending.push_back(message);
                                }
                                // Gone, or too far ahead of the server.
                                _ => break None,
                            },
                        }
                    };
                    let Some(counts) = counts else {
                        break;
                    };
                    for msg in counts {
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
            Err(err) => Some(LiveError::invalid(err).into()),
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
