//! The live WebSocket (`/v1/live`, docs/LIVE.md): subscribe to posts, read
//! `likeCount` pushes.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::PostId;

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
}

/// What [`LiveSocket::next`] saw: a message, nothing in time, or the end.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// A JSON message from the server.
    Message(Value),
    /// Nothing arrived within the wait; the socket is still open.
    TimedOut,
    /// The server closed the socket, or it broke.
    Closed,
}

impl Next {
    /// The message, if one came.
    pub fn message(self) -> Option<Value> {
        match self {
            Self::Message(v) => Some(v),
            Self::TimedOut | Self::Closed => None,
        }
    }
}

/// A `likeCount` message: a post's count and its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveCount {
    pub post: PostId,
    pub count: i64,
    /// Monotonic per post: a count with a lower version than one already
    /// seen is older (docs/LIVE.md, "Versions").
    pub version: i64,
}

impl LiveCount {
    /// The count in a server message, if it is a `likeCount`.
    pub fn parse(msg: &Value) -> Option<Self> {
        (msg["type"] == "likeCount").then_some(())?;
        Some(Self {
            post: msg["postId"].as_i64()?,
            count: msg["likeCount"].as_i64()?,
            version: msg["version"].as_i64()?,
        })
    }
}

/// One connection to `/v1/live`.
pub struct LiveSocket {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl LiveSocket {
    /// Connects to the Tally at `base` (`http://host:port`).
    pub async fn connect(base: &str) -> Result<Self, LiveError> {
        let url = format!("{}/v1/live", base.replacen("http", "ws", 1));
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Self { ws })
    }

    /// Starts watching `posts`; the server answers with their counts.
    pub async fn subscribe(&mut self, posts: &[PostId]) -> Result<(), LiveError> {
        self.send(&json!({"type": "subscribe", "postIds": posts}))
            .await
    }

    pub async fn unsubscribe(&mut self, posts: &[PostId]) -> Result<(), LiveError> {
        self.send(&json!({"type": "unsubscribe", "postIds": posts}))
            .await
    }

    /// Sends any JSON message (tests send malformed ones on purpose).
    pub async fn send(&mut self, msg: &Value) -> Result<(), LiveError> {
        self.send_text(&msg.to_string()).await
    }

    pub async fn send_text(&mut self, text: &str) -> Result<(), LiveError> {
        self.ws.send(Message::Text(text.into())).await?;
        Ok(())
    }

    /// The next text message, waiting at most `wait` in all: its JSON, or
    /// a JSON string of the raw text when it is not JSON (so that a caller
    /// expecting an object sees the difference). Other frames (pings,
    /// binary) are skipped.
    pub async fn next(&mut self, wait: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Next::TimedOut,
                Ok(None | Some(Err(_))) => return Next::Closed,
                Ok(Some(Ok(Message::Close(_)))) => return Next::Closed,
                Ok(Some(Ok(Message::Text(text)))) => {
                    return Next::Message(
                        serde_json::from_str(&text)
                            .unwrap_or_else(|_| Value::String(text.to_string())),
                    );
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// The next count of `post` (snapshot or push) within `wait`,
    /// skipping other messages.
    pub async fn next_count(&mut self, post: PostId, wait: Duration) -> Option<LiveCount> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Next::Message(m) => match LiveCount::parse(&m) {
                    Some(c) if c.post == post => return Some(c),
                    _ => {}
                },
                Next::TimedOut | Next::Closed => return None,
            }
        }
    }

    /// Waits up to `wait` for a push of `post` at exactly `count`,
    /// skipping other messages. False when it did not come in time.
    pub async fn wait_for_count(&mut self, post: PostId, count: i64, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Next::Message(m)
                    if m["type"] == "likeCount"
                        && m["postId"] == post
                        && m["likeCount"] == count =>
                {
                    return true;
                }
                Next::Message(_) => {}
                Next::TimedOut | Next::Closed => return false,
            }
        }
    }
}
