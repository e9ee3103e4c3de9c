//! Live counts over the plain WebSocket endpoint `/v1/live`.

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{Value, json};
use tally_client::{LiveSocket, Next};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp};

backend_tests!(
    websocket_subscribers_see_counts_change,
    websocket_bursts_are_coalesced,
    websocket_rejects_bad_messages,
);

async fn connect(app: &TestApp) -> LiveSocket {
    LiveSocket::connect(&app.base).await.expect("connect")
}

async fn send(ws: &mut LiveSocket, msg: Value) {
    ws.send(&msg).await.expect("send");
}

/// The next message within `wait`; a closed socket fails the test (it is
/// not the same as silence).
async fn next(ws: &mut LiveSocket, wait: Duration) -> Option<Value> {
    match ws.next(wait).await {
        Next::Message(m) => Some(m),
        Next::TimedOut => None,
        Next::Closed => panic!("the server closed the live socket"),
    }
}

/// Waits for a `likeCount` of `post` equal to `count`.
async fn expect_count(ws: &mut LiveSocket, post: i64, count: i64) {
    assert!(
        ws.wait_for_count(post, count, Duration::from_secs(5)).await,
        "no likeCount {count} for post {post}"
    );
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
    ws.send_text("{nope").await.expect("send");
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
