//! Versions on every count that travels (docs/LIVE.md, "Versions"), the
//! re-send of watched counts after a lost Pub/Sub subscription, and the
//! toggle's `Idempotency-Key`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tally_client::{LikeAnswer, LiveCount, LiveSocket};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, TestUser, assert_error, test_admin_database_url};
use crate::instances::ExtraRedis;

backend_tests!(
    versions_increase_per_post_and_travel_with_every_count,
    a_snapshot_is_never_older_than_a_push_before_it,
    a_toggle_with_the_same_idempotency_key_flips_once,
    a_malformed_idempotency_key_is_refused,
);

const WAIT: Duration = Duration::from_secs(10);

async fn op(app: &TestApp, user: &TestUser, post: i64, verb: tally_client::LikeVerb) -> LikeAnswer {
    app.api()
        .like(&user.token, post, verb)
        .await
        .expect("like answer")
}

async fn subscribe(app: &TestApp, post: i64) -> LiveSocket {
    let mut ws = LiveSocket::connect(&app.base).await.expect("connect");
    ws.send(&json!({"type": "subscribe", "postIds": [post]}))
        .await
        .expect("subscribe");
    ws
}

/// The next count of `post` on `ws`; fails the test if none comes.
async fn next_count(ws: &mut LiveSocket, post: i64) -> LiveCount {
    ws.next_count(post, WAIT)
        .await
        .unwrap_or_else(|| panic!("no likeCount for post {post} within {WAIT:?}"))
}

async fn versions_increase_per_post_and_travel_with_every_count(backend: Backend) {
    use tally_client::LikeVerb::{Like, Toggle, Unlike};
    let app = TestApp::spawn(backend).await;
    let users = app.seed_users(4).await;
    let post = app.post(&users[0]).await;
    let other = app.post(&users[0]).await;
    let mut ws = subscribe(&app, post).await;
    let first = next_count(&mut ws, post).await;
    assert_eq!(first.count, 0);

    let mut last = first.version;
    for (user, verb, count) in [
        (&users[1], Like, 1),
        (&users[2], Like, 2),
        (&users[1], Unlike, 1),
        (&users[3], Toggle, 2),
        (&users[3], Toggle, 1),
        (&users[2], Toggle, 0),
    ] {
        // A change in another post in between: versions are per post,
        // and must still grow for this one.
        op(&app, user, other, Like).await;
        let answer = op(&app, user, post, verb).await;
        assert_eq!(answer.like_count, count);
        assert!(
            answer.version > last,
            "{verb:?} by {}: version {} after {last}",
            user.id,
            answer.version
        );
        last = answer.version;
        // The push carries the answer's own version.
        let push = next_count(&mut ws, post).await;
        assert_eq!(
            (push.count, push.version),
            (count, answer.version),
            "the push of {verb:?}"
        );
    }
    // A repeat changes nothing: its version is not older than the change.
    let repeat = op(&app, &users[1], post, Unlike).await;
    assert_eq!(repeat.like_count, 0);
    assert!(repeat.version >= last, "a repeat answered an older version");
    // The post as read over HTTP carries its version too.
    let view = app.get_post(None, post).await;
    assert_eq!(view["likeCount"], 0);
    assert!(
        view["likeVersion"].as_i64().expect("likeVersion") >= last,
        "post view {view}"
    );
}

async fn a_snapshot_is_never_older_than_a_push_before_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let users = app.seed_users(20).await;
    let post = app.post(&users[0]).await;
    let mut watcher = subscribe(&app, post).await;
    next_count(&mut watcher, post).await;
    for (i, user) in users.iter().enumerate() {
        let answer = op(&app, user, post, tally_client::LikeVerb::Like).await;
        let push = next_count(&mut watcher, post).await;
        assert_eq!((push.count, push.version), (i as i64 + 1, answer.version));
        // A client subscribing after that push gets a count at least as
        // new: the same count, and a version no older.
        let mut late = subscribe(&app, post).await;
        let snapshot = next_count(&mut late, post).await;
        assert_eq!(snapshot.count, i as i64 + 1, "snapshot count");
        assert!(
            snapshot.version >= answer.version,
            "snapshot version {} older than the push {} before it",
            snapshot.version,
            answer.version
        );
    }
}

async fn toggle_once(app: &TestApp, user: &TestUser, post: i64, key: &str) -> LikeAnswer {
    app.api()
        .toggle_once(&user.token, post, key)
        .await
        .expect("toggle answer")
}

async fn a_toggle_with_the_same_idempotency_key_flips_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let users = app.seed_users(3).await;
    let post = app.post(&users[0]).await;
    let key = "0b6c1a2e-9f3d-4c1b-8a7e-2f5d6c7b8a9e";

    let first = toggle_once(&app, &users[1], post, key).await;
    assert!(first.liked);
    assert_eq!(first.like_count, 1);
    // The client's retry (after a timeout, say): the same answer, no flip.
    let retry = toggle_once(&app, &users[1], post, key).await;
    assert_eq!(retry, first, "a retry answers what the first did");
    assert_eq!(app.get_post(Some(&users[1]), post).await["likedByMe"], true);

    // Another user's key, even the same string, is theirs.
    let theirs = toggle_once(&app, &users[2], post, key).await;
    assert!(theirs.liked);
    assert_eq!(theirs.like_count, 2);

    // A new key is a new flip.
    let second = toggle_once(&app, &users[1], post, "second-flip").await;
    assert!(!second.liked);
    assert_eq!(second.like_count, 1);
    assert!(second.version > first.version);
    let again = toggle_once(&app, &users[1], post, "second-flip").await;
    assert_eq!(again, second);
    // Without a key, a toggle flips every time, as before.
    let plain = app.toggle(&users[1], post).await;
    assert_eq!(plain.status(), StatusCode::OK);
    let plain: Value = plain.json().await.expect("json");
    assert_eq!(plain["liked"], true);
    assert_eq!(app.get_post(None, post).await["likeCount"], 2);
}

async fn a_malformed_idempotency_key_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let users = app.seed_users(2).await;
    let post = app.post(&users[0]).await;
    for bad in ["", "has space", "a:b", "ключ", &"k".repeat(65)] {
        let r = app
            .api()
            .like_request(&users[1].token, post, tally_client::LikeVerb::Toggle)
            .header("Idempotency-Key", bad.as_bytes())
            .send()
            .await
            .expect("request");
        assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    // Two keys in one request: which one is meant?
    let r = app
        .api()
        .toggle_request(&users[1].token, post, "one")
        .header("Idempotency-Key", "two")
        .send()
        .await
        .expect("request");
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    // Nothing flipped.
    assert_eq!(app.get_post(None, post).await["likeCount"], 0);
    assert_eq!(
        toggle_once(&app, &users[1], post, &"k".repeat(64))
            .await
            .like_count,
        1
    );
}

/// An app on `redis` and a fresh database of the test PostgreSQL.
async fn on_private_redis(redis: &ExtraRedis) -> TestApp {
    let dir = tempfile::tempdir().expect("dir");
    let s = crate::production::settings(&redis.url(), &test_admin_database_url(), dir.path()).await;
    TestApp::spawn_with(Backend::RedisPg, |t| {
        t.redis_url = s.redis_url.clone();
        t.database_url = s.database_url.clone();
        t.production = s.production.clone();
    })
    .await
}

/// The node's Pub/Sub connection dropped (here: killed by Redis): a like
/// made before it is back is never published to it, and the node re-sends
/// the current count of every watched post once it has subscribed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_lost_pubsub_connection_watched_counts_are_sent_again() {
    // A private Redis: killing Pub/Sub clients must not touch other tests.
    let redis = ExtraRedis::start();
    let app = on_private_redis(&redis).await;
    let users = app.seed_users(3).await;
    let post = app.post(&users[0]).await;
    op(&app, &users[1], post, tally_client::LikeVerb::Like).await;
    let mut ws = subscribe(&app, post).await;
    let snapshot = next_count(&mut ws, post).await;
    assert_eq!(snapshot.count, 1);

    let mut conn = redis::Client::open(redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .expect("CLIENT KILL");
    assert!(killed >= 1, "the node had no Pub/Sub connection");
    // Published while the node is not subscribed (it waits before it
    // reconnects): lost on the way, so only a re-send can bring it.
    let answer = op(&app, &users[2], post, tally_client::LikeVerb::Like).await;
    let mut seen = Vec::new();
    let resent = loop {
        let c = next_count(&mut ws, post).await;
        seen.push(c);
        if c.count == 2 {
            break c;
        }
    };
    assert!(
        resent.version >= answer.version,
        "re-sent {resent:?} is older than the like {answer:?}; seen {seen:?}"
    );
}

/// While Redis is down, likes go to PostgreSQL: their answers still order
/// after what Redis answered before, counts read from PostgreSQL carry
/// version 0 (never newer than a push), a keyed toggle's retry on the node
/// flips once, and after Redis is back its versions order after the
/// fallback's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn versions_keep_their_order_across_a_fallback_to_postgres() {
    let mut redis = ExtraRedis::start();
    let app = on_private_redis(&redis).await;
    let users = app.seed_users(5).await;
    let post = app.post(&users[0]).await;
    let on_redis = op(&app, &users[1], post, tally_client::LikeVerb::Like).await;
    app.drain().await;
    redis.kill();
    let on_postgres = loop {
        match app
            .api()
            .like(&users[2].token, post, tally_client::LikeVerb::Like)
            .await
        {
            Ok(answer) => break answer,
            // A 503 while the node notices; the next try goes to PostgreSQL.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(on_postgres.like_count, 2);
    assert!(
        on_postgres.version > on_redis.version,
        "fallback {on_postgres:?} after Redis {on_redis:?}"
    );
    let read = app.get_post(None, post).await;
    assert_eq!(read["likeCount"], 2);
    assert_eq!(
        read["likeVersion"], 0,
        "a count read from PostgreSQL: {read}"
    );
    // A keyed toggle and its retry on this node flip once on PostgreSQL too.
    let toggled = toggle_once(&app, &users[4], post, "during-the-outage").await;
    assert_eq!((toggled.liked, toggled.like_count), (true, 3));
    assert!(toggled.version > on_postgres.version);
    let retried = toggle_once(&app, &users[4], post, "during-the-outage").await;
    assert_eq!(retried, toggled, "the retry flipped again");

    redis.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app.get_json("/readyz").await["status"] != "ready" {
        assert!(std::time::Instant::now() < deadline, "no return to Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = op(&app, &users[3], post, tally_client::LikeVerb::Like).await;
    assert_eq!(back.like_count, 4);
    assert!(
        back.version > toggled.version,
        "Redis {back:?} after fallback {toggled:?}"
    );
}

/// The served OpenAPI documents the versions and the toggle's header
/// (what schemathesis and generated clients read).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_openapi_documents_versions_and_the_idempotency_key() {
    let app = TestApp::spawn(Backend::Embedded).await;
    let spec: Value = app.get_json("/openapi.json").await;
    let params = spec["paths"]["/v1/posts/{id}/like/toggle"]["post"]["parameters"]
        .as_array()
        .expect("toggle parameters");
    let key = params
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .unwrap_or_else(|| panic!("no Idempotency-Key in {params:?}"));
    assert_eq!(key["in"], "header");
    assert_eq!(key["required"], false);
    let schemas = &spec["components"]["schemas"];
    assert!(schemas["LikeView"]["properties"]["version"].is_object());
    assert!(schemas["PostView"]["properties"]["likeVersion"].is_object());
    assert!(
        spec["paths"]["/v1/posts/{id}/like/toggle"]["post"]["responses"]["400"].is_object(),
        "the toggle documents its 400"
    );
}

/// On a Redis Cluster: the node's sharded subscriptions are killed on
/// every master. Changes published before the reader has subscribed every
/// channel again are lost, so once it has, the node re-sends the count of
/// every watched post, changed or not: here an unchanged one, which only
/// the re-send can bring.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_cluster_lost_sharded_subscriptions_re_send_watched_counts() {
    let cluster = crate::instances::ExtraCluster::start();
    let url = cluster.url();
    let app = TestApp::spawn_with(Backend::ClusterPg, move |s| {
        s.redis_url = Some(url);
    })
    .await;
    let users = app.seed_users(2).await;
    let post = app.post(&users[0]).await;
    let answer = op(&app, &users[1], post, tally_client::LikeVerb::Like).await;
    let mut ws = subscribe(&app, post).await;
    assert_eq!(next_count(&mut ws, post).await.count, 1);

    let killed = cluster.on_each(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(
        killed
            .iter()
            .any(|(_, n)| n.trim().parse::<i64>().unwrap_or(0) > 0),
        "no Pub/Sub connection killed: {killed:?}"
    );
    let resent = next_count(&mut ws, post).await;
    assert_eq!(resent.count, 1);
    assert!(
        resent.version >= answer.version,
        "{resent:?} after {answer:?}"
    );
}
