//! Live counts over the plain WebSocket endpoint `/v1/live`.

use std::time::{Duration, Instant};

use futures::future::join_all;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp};

backend_tests!(
    websocket_subscribers_see_counts_change,
    websocket_bursts_are_coalesced,
    websocket_rejects_bad_messages,
);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(app: &TestApp) -> Ws {
    let url = format!("{}/v1/live", app.base.replace("http://", "ws://"));
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

async fn send(ws: &mut Ws, msg: Value) {
    ws.send(Message::Text(msg.to_string().into()))
        .await
        .expect("send");
}

/// The next JSON message, or `None` after `wait`.
async fn next(ws: &mut Ws, wait: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return serde_json::from_str(&text).ok(),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// Waits for a `likeCount` of `post` equal to `count`.
async fn expect_count(ws: &mut Ws, post: i64, count: i64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(m) = next(ws, Duration::from_secs(5)).await
            && m["type"] == "likeCount"
            && m["postId"] == post
            && m["likeCount"] == count
        {
            return;
        }
    }
    panic!("no likeCount {count} for post {post}");
}

async fn websocket_subscribers_see_counts_change(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let users = app.seed_users(3).await;
    let post = app.post(&users[0]).await;
    app.like(&users[1], post).await;

    let mut ws = connect(&app).await;
    send(&mut ws, json!({"type": "subscribe", "postIds": [post]})).await;
    expect_count(&mut ws, post, 1).await; // the current count first
    app.like(&users[2], post).await;
    expect_count(&mut ws, post, 2).await;
    app.unlike(&users[1], post).await;
    expect_count(&mut ws, post, 1).await;

    send(&mut ws, json!({"type": "unsubscribe", "postIds": [post]})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.unlike(&users[2], post).await;
    assert_eq!(
        next(&mut ws, Duration::from_millis(300)).await,
        None,
        "no push after unsubscribe"
    );
}

async fn websocket_bursts_are_coalesced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let users = app.seed_users(2000).await;
    let post = app.post(&users[0]).await;
    let mut ws = connect(&app).await;
    send(&mut ws, json!({"type": "subscribe", "postIds": [post]})).await;
    expect_count(&mut ws, post, 0).await;

    let started = Instant::now();
    join_all(users.iter().map(|u| app.like(u, post))).await;
    let seconds = started.elapsed().as_secs_f64();
    let mut seen = Vec::new();
    while let Some(m) = next(&mut ws, Duration::from_millis(500)).await {
        seen.push(m["likeCount"].as_i64().expect("count"));
    }
    assert_eq!(seen.last(), Some(&2000), "the last push is the final count");
    // 10 pushes a second per post, plus the leading and trailing edges.
    let bound = (seconds * 10.0).ceil() as usize + 3;
    assert!(
        seen.len() <= bound,
        "{} pushes for {seconds:.2} s of likes (bound {bound})",
        seen.len()
    );
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "counts only grow here: {seen:?}"
    );
}

async fn websocket_rejects_bad_messages(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut ws = connect(&app).await;
    ws.send(Message::Text("{nope".into())).await.expect("send");
    let err = next(&mut ws, Duration::from_secs(2))
        .await
        .expect("an error reply");
    assert_eq!(
        (err["type"].as_str(), err["code"].as_str()),
        (Some("error"), Some("invalid_request"))
    );
    let too_many: Vec<i64> = (1..=501).collect();
    send(&mut ws, json!({"type": "subscribe", "postIds": too_many})).await;
    let err = next(&mut ws, Duration::from_secs(2))
        .await
        .expect("an error reply");
    assert_eq!(err["code"], "too_many_subscriptions");
    // The connection still works.
    send(&mut ws, json!({"type": "subscribe", "postIds": [999]})).await;
    let snapshot = next(&mut ws, Duration::from_secs(2))
        .await
        .expect("snapshot");
    assert_eq!(
        (snapshot["postId"].as_i64(), snapshot["likeCount"].as_i64()),
        (Some(999), Some(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websocket_a_like_on_one_node_reaches_another() {
    let a = TestApp::spawn(Backend::RedisPg).await;
    let shared = a.settings.clone();
    let b = TestApp::spawn_with(Backend::RedisPg, |s| {
        s.redis_url = shared.redis_url.clone();
        s.database_url = shared.database_url.clone();
        s.production = shared.production.clone();
    })
    .await;
    let users = a.seed_users(2).await;
    let post = a.post(&users[0]).await;
    let mut ws = connect(&b).await;
    send(&mut ws, json!({"type": "subscribe", "postIds": [post]})).await;
    expect_count(&mut ws, post, 0).await;
    a.like(&users[1], post).await;
    expect_count(&mut ws, post, 1).await;
}
