//! The production backend beyond the shared behaviour tests: several
//! nodes, crashes and outages, reconciliation and strict durability.
//! Every test gets its own database and key prefix; tests that break a
//! service start their own instance of it (see `instances.rs`).

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use futures::future::join_all;
use reqwest::{Client, StatusCode};
use serde_json::Value;
use sqlx::{PgPool, Row};
use tally_server::config::Settings;
use tally_store::production::{Durability, Production, reconcile};

use crate::helpers::{
    Backend, TestApp, answer, test_admin_database_url, test_redis_url, use_redis_pg,
};
use crate::instances::{ExtraPostgres, ExtraRedis};
use crate::nodes::{Ledger, Load, Node, create_post, seed};

pub(crate) async fn settings(redis_url: &str, admin_db: &str, dir: &std::path::Path) -> Settings {
    let mut s = Settings::for_tests(dir.to_path_buf());
    use_redis_pg(&mut s, redis_url, admin_db).await;
    s.production.sync.lease_ttl_ms = 1000;
    s
}

pub(crate) async fn connect(s: &Settings) -> Production {
    Production::connect(
        s.redis_url.as_deref().expect("redis"),
        s.database_url.as_deref().expect("database"),
        s.production.clone(),
    )
    .await
    .expect("connect")
}

/// Waits for the write-behind, then checks every invariant: PostgreSQL's
/// rows allow every answer of the ledger, each post's count equals its
/// rows, and Redis's count and likers (where loaded) equal them too.
pub(crate) async fn assert_exact(s: &Settings, ledger: &Ledger, posts: &[i64]) {
    let (mut p, liked) = drained_likes(s).await;
    let mut checked = 0;
    for (&pair, seen) in ledger {
        assert!(
            seen.allows(liked.contains(&pair)),
            "user {} post {}: answers {seen:?}, PostgreSQL says {}",
            pair.0,
            pair.1,
            liked.contains(&pair)
        );
        checked += usize::from(seen.in_flight.is_none());
    }
    assert!(
        checked > 50,
        "too few settled pairs to mean anything: {checked}"
    );
    for pair in &liked {
        assert!(
            ledger.contains_key(pair),
            "PostgreSQL has a like nobody made: {pair:?}"
        );
    }
    for &post in posts {
        assert_post_consistent(&mut p, post).await;
    }
}

/// Waits for the write-behind, then reads every (user, post) PostgreSQL
/// holds as liked.
pub(crate) async fn drained_likes(s: &Settings) -> (Production, HashSet<(i64, i64)>) {
    let p = connect(s).await;
    let mut redis = p.redis.clone();
    assert!(
        tally_store::production::sync::drain(&mut redis, &p.keys, Duration::from_secs(60))
            .await
            .expect("backlog"),
        "write-behind did not drain"
    );
    let liked = sqlx::query("SELECT user_id, post_id FROM likes WHERE liked")
        .fetch_all(&p.pg)
        .await
        .expect("likes")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    (p, liked)
}

/// count == rows in PostgreSQL, and Redis (if loaded) agrees with both.
pub(crate) async fn assert_post_consistent(p: &mut Production, post: i64) {
    let row = sqlx::query("SELECT like_count, (SELECT COUNT(*) FROM likes WHERE post_id = $1 AND liked) FROM posts WHERE id = $1")
        .bind(post)
        .fetch_one(&p.pg)
        .await
        .expect("post");
    let (count, rows): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(count, rows, "post {post}: posts.like_count vs likes rows");
    let n: Option<i64> = redis::cmd("GET")
        .arg(p.keys.count(post))
        .query_async(&mut p.redis)
        .await
        .expect("GET");
    if let Some(n) = n {
        let members: BTreeSet<i64> = redis::cmd("SMEMBERS")
            .arg(p.keys.likers(post))
            .query_async(&mut p.redis)
            .await
            .expect("SMEMBERS");
        let pg: BTreeSet<i64> =
            sqlx::query_scalar("SELECT user_id FROM likes WHERE post_id = $1 AND liked")
                .bind(post)
                .fetch_all(&p.pg)
                .await
                .expect("likers")
                .into_iter()
                .collect();
        assert_eq!(n, rows, "post {post}: Redis count vs PostgreSQL rows");
        assert_eq!(
            members, pg,
            "post {post}: Redis likers vs PostgreSQL likers"
        );
    }
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(2000)
        .build()
        .expect("client")
}

async fn like_answer(
    client: &Client,
    method: reqwest::Method,
    url: String,
    token: &str,
) -> (bool, i64) {
    let r = client
        .request(method, url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.expect("json");
    (
        v["liked"].as_bool().expect("liked"),
        v["likeCount"].as_i64().expect("count"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_count_exactly_and_agree_after_the_drain() {
    let dir = tempfile::tempdir().expect("dir");
    let s = settings(&test_redis_url(), &test_admin_database_url(), dir.path()).await;
    let users = seed(&s, dir.path(), 1000);
    let (a, b) = (
        Node::start(&s, &dir.path().join("a")),
        Node::start(&s, &dir.path().join("b")),
    );
    let client = client();
    let hot = create_post(&client, &a.base, &users[0].1).await;
    let solo = create_post(&client, &b.base, &users[0].1).await;

    // 1,000 users, one post, both nodes: the answers are exactly 1..=1000.
    let answers = join_all(users.iter().enumerate().map(|(i, (_, token))| {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        like_answer(
            &client,
            reqwest::Method::PUT,
            format!("{base}/v1/posts/{hot}/like"),
            token,
        )
    }))
    .await;
    let counts: HashSet<i64> = answers.iter().map(|(_, c)| *c).collect();
    assert_eq!(counts, (1..=1000).collect::<HashSet<_>>());

    // One user, 100 concurrent mixed operations over both nodes.
    let token = &users[1].1;
    let answers = join_all((0..100).map(|i| {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        let (method, path) = match i % 3 {
            0 => (reqwest::Method::PUT, "like"),
            1 => (reqwest::Method::DELETE, "like"),
            _ => (reqwest::Method::POST, "like/toggle"),
        };
        like_answer(
            &client,
            method,
            format!("{base}/v1/posts/{solo}/{path}"),
            token,
        )
    }))
    .await;
    for (liked, count) in &answers {
        assert_eq!(*count, i64::from(*liked));
    }

    let mut p = connect(&s).await;
    assert!(
        tally_store::production::sync::drain(&mut p.redis, &p.keys, Duration::from_secs(60))
            .await
            .expect("drain")
    );
    assert_post_consistent(&mut p, hot).await;
    assert_post_consistent(&mut p, solo).await;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM likes WHERE post_id = $1 AND liked")
        .bind(hot)
        .fetch_one(&p.pg)
        .await
        .expect("rows");
    assert_eq!(rows, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_node_mid_load_loses_no_acknowledged_like() {
    let dir = tempfile::tempdir().expect("dir");
    let s = settings(&test_redis_url(), &test_admin_database_url(), dir.path()).await;
    let users = seed(&s, dir.path(), 200);
    let mut a = Node::start(&s, &dir.path().join("a"));
    let b = Node::start(&s, &dir.path().join("b"));
    let client = client();
    let mut posts = Vec::new();
    for _ in 0..4 {
        posts.push(create_post(&client, &a.base, &users[0].1).await);
    }
    let load = Load::start(
        &client,
        vec![a.base.clone(), b.base.clone()],
        &users,
        &posts,
        true,
    );
    load.wait_answers(2000).await;
    let killed = std::time::Instant::now();
    a.kill_9();
    // Node b takes over a's partitions (lease expiry) and its unacknowledged
    // stream entries, while the load goes on through b alone.
    load.wait_answers(2000).await;
    let ledger = load.finish().await;
    eprintln!(
        "faults: kill -9 of one of two nodes (fast mode): 2000 answers through the other \
         in {:.1} s; {} pairs, {} with an unknown outcome (in flight to the killed node)",
        killed.elapsed().as_secs_f64(),
        ledger.len(),
        load_failures(&ledger)
    );
    assert_exact(&s, &ledger, &posts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_outage_under_load_loses_nothing_and_the_backlog_drains() {
    let dir = tempfile::tempdir().expect("dir");
    let mut pg = ExtraPostgres::start();
    let s = settings(&test_redis_url(), &pg.url(), dir.path()).await;
    let users = seed(&s, dir.path(), 200);
    let node = Node::start(&s, &dir.path().join("a"));
    let client = client();
    let mut posts = Vec::new();
    for _ in 0..4 {
        posts.push(create_post(&client, &node.base, &users[0].1).await);
    }
    let load = Load::start(&client, vec![node.base.clone()], &users, &posts, false);
    load.wait_answers(1000).await;
    pg.crash();
    // Likes keep being answered from Redis; the events wait in the streams.
    load.wait_answers(2000).await;
    let ready = client
        .get(format!("{}/readyz", node.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    // A load balancer's check keeps the node in rotation: PostgreSQL is
    // down for every node alike, and likes are still answered.
    let for_balancer = client
        .get(format!("{}/readyz?scope=node", node.base))
        .send()
        .await
        .expect("readyz for a balancer");
    assert_eq!(for_balancer.status(), StatusCode::OK);
    let body: serde_json::Value = for_balancer.json().await.expect("json");
    assert_eq!(body["status"], "degraded", "{body}");
    let mut p = connect_redis_only(&s).await;
    let backlog = tally_store::production::sync::backlog(&mut p.0, &p.1)
        .await
        .expect("backlog");
    assert!(
        backlog > 0,
        "the events should wait in the streams while PostgreSQL is down"
    );
    pg.start_again();
    let restarted = std::time::Instant::now();
    load.wait_answers(500).await;
    let ledger = load.finish().await;
    tally_store::production::sync::drain(&mut p.0, &p.1, Duration::from_secs(60))
        .await
        .expect("drain");
    eprintln!(
        "faults: PostgreSQL crashed (immediate stop) under load (fast mode): backlog {backlog} \
         while down, empty {:.1} s after the restart (the load stopped after 500 more \
         answers); {} pairs, {} with an unknown outcome",
        restarted.elapsed().as_secs_f64(),
        ledger.len(),
        load_failures(&ledger)
    );
    assert_eq!(
        load_failures(&ledger),
        0,
        "no like may fail in fast mode while only PostgreSQL is down"
    );
    assert_exact(&s, &ledger, &posts).await;
}

pub(crate) fn load_failures(ledger: &Ledger) -> usize {
    ledger.values().filter(|s| s.in_flight.is_some()).count()
}

/// Redis alone, for looking at the backlog while PostgreSQL is down.
async fn connect_redis_only(
    s: &Settings,
) -> (
    tally_store::production::RedisConn,
    tally_store::production::Keys,
) {
    let target =
        tally_store::production::RedisTarget::parse(s.redis_url.as_deref().expect("redis"))
            .expect("redis url");
    let timeout = Duration::from_secs(5);
    let conn = target.connect(timeout, timeout).await.expect("redis");
    (
        conn,
        tally_store::production::Keys::new(&s.production.key_prefix, s.production.partitions),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_the_service_stays_up_through_postgres() {
    let dir = tempfile::tempdir().expect("dir");
    let mut redis = ExtraRedis::start();
    let mut s = settings(&redis.url(), &test_admin_database_url(), dir.path()).await;
    // Strict: every answer is in PostgreSQL first, so even a Redis that
    // loses everything loses no acknowledged like.
    s.production.durability = Durability::Strict;
    let users = seed(&s, dir.path(), 100);
    let app = TestApp::spawn_with(Backend::RedisPg, |t| {
        t.redis_url = s.redis_url.clone();
        t.database_url = s.database_url.clone();
        t.production = s.production.clone();
    })
    .await;
    let client = client();
    let mut posts = Vec::new();
    for _ in 0..3 {
        posts.push(create_post(&client, &app.base, &users[0].1).await);
    }
    let load = Load::start(&client, vec![app.base.clone()], &users, &posts, true);
    load.wait_answers(500).await;
    let killed = std::time::Instant::now();
    redis.kill();
    load.wait_answers(500).await;
    // Degraded but serving: still 200, so load balancers keep it.
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.expect("json");
    assert_eq!(ready["status"], "degraded");
    assert!(
        ready["problems"][0]
            .as_str()
            .expect("problem")
            .contains("redis")
    );
    redis.restart(); // empty: no persistence
    let restarted = std::time::Instant::now();
    wait_for_readiness(&app, "ready", 30, "node did not return to the fast path").await;
    let back = restarted.elapsed();
    load.wait_answers(500).await;
    let ledger = load.finish().await;
    eprintln!(
        "faults: Redis killed without persistence (strict mode), restarted empty after \
         {:.1} s: back on Redis {:.1} s after the restart; {} pairs, {} with an unknown outcome",
        restarted.duration_since(killed).as_secs_f64(),
        back.as_secs_f64(),
        ledger.len(),
        load_failures(&ledger)
    );
    assert_exact(&s, &ledger, &posts).await;
    // The API agrees with PostgreSQL after Redis was rebuilt lazily.
    let p = connect(&s).await;
    for &post in &posts {
        let rows: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM likes WHERE post_id = $1 AND liked")
                .bind(post)
                .fetch_one(&p.pg)
                .await
                .expect("rows");
        assert_eq!(
            app.get_json(&format!("/v1/posts/{post}")).await["likeCount"],
            rows
        );
    }
}

/// Deletes every key of the app's prefix: a flush of this tenant.
async fn flush_prefix(p: &mut Production) {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", p.keys.prefix()))
        .query_async(&mut p.redis)
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut p.redis)
            .await
            .expect("DEL");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_flushed_counts_stay_right() {
    let app = TestApp::spawn(Backend::RedisPg).await;
    let users = app.seed_users(50).await;
    let post = app.post(&users[0]).await;
    join_all(users.iter().map(|u| app.like(u, post))).await;
    join_all(users[..5].iter().map(|u| app.unlike(u, post))).await;
    app.drain().await;
    let mut p = app.production().await;
    flush_prefix(&mut p).await;
    // Loaded lazily from PostgreSQL on first touch, by many readers at once.
    let views = join_all((0..20).map(|_| app.get_post(Some(&users[10]), post))).await;
    assert!(
        views
            .iter()
            .all(|v| v["likeCount"] == 45 && v["likedByMe"] == true)
    );
    let (liked, count) = like_answer(
        &app.client,
        reqwest::Method::DELETE,
        app.url(&format!("/v1/posts/{post}/like")),
        &users[10].token,
    )
    .await;
    assert_eq!((liked, count), (false, 44));
    app.drain().await;
    assert_post_consistent(&mut p, post).await;
    let report = reconcile::reconcile(&mut p.redis, &p.pg, &p.keys, false)
        .await
        .expect("reconcile");
    assert_eq!(report.drift(), 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconciliation_finds_and_repairs_drift_both_ways() {
    let app = TestApp::spawn(Backend::RedisPg).await;
    let users = app.seed_users(20).await;
    let (a, b, c) = (
        app.post(&users[0]).await,
        app.post(&users[0]).await,
        app.post(&users[0]).await,
    );
    for post in [a, b, c] {
        join_all(users[..10].iter().map(|u| app.like(u, post))).await;
    }
    app.drain().await;
    let mut p = app.production().await;
    let clean = reconcile::reconcile(&mut p.redis, &p.pg, &p.keys, false)
        .await
        .expect("reconcile");
    assert_eq!(clean.drift(), 0, "{clean:?}");

    // Redis has a like PostgreSQL lacks (post a), PostgreSQL has one Redis
    // lacks (post b), and post c's stored count is off.
    let _: () = redis::pipe()
        .sadd(p.keys.likers(a), users[15].id)
        .ignore()
        .incr(p.keys.count(a), 1)
        .ignore()
        .query_async(&mut p.redis)
        .await
        .expect("inject redis drift");
    sqlx::query("INSERT INTO likes (post_id, user_id, liked, version, liked_at) VALUES ($1, $2, true, 1, 0)")
        .bind(b).bind(users[16].id).execute(&p.pg).await.expect("inject pg drift");
    sqlx::query("UPDATE posts SET like_count = like_count + 7 WHERE id = $1")
        .bind(c)
        .execute(&p.pg)
        .await
        .expect("inject count drift");

    let found = reconcile::reconcile(&mut p.redis, &p.pg, &p.keys, false)
        .await
        .expect("reconcile");
    assert_eq!(
        (
            found.redis_likers_drift,
            found.pg_count_drift,
            found.repaired
        ),
        (2, 2, 0),
        "{found:?}"
    );
    let repaired = reconcile::reconcile(&mut p.redis, &p.pg, &p.keys, true)
        .await
        .expect("repair");
    assert!(repaired.repaired >= 3, "{repaired:?}");
    let after = reconcile::reconcile(&mut p.redis, &p.pg, &p.keys, false)
        .await
        .expect("reconcile");
    assert_eq!(after.drift(), 0, "{after:?}");
    // PostgreSQL is the truth: the phantom Redis like is gone, the row wins.
    assert_eq!(app.get_post(None, a).await["likeCount"], 10);
    assert_eq!(app.get_post(None, b).await["likeCount"], 11);
    assert_eq!(app.get_post(None, c).await["likeCount"], 10);
    for post in [a, b, c] {
        assert_post_consistent(&mut p, post).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strict_mode_answers_after_the_postgres_commit() {
    let mut pg = ExtraPostgres::start();
    let dir = tempfile::tempdir().expect("dir");
    let mut s = settings(&test_redis_url(), &pg.url(), dir.path()).await;
    s.production.durability = Durability::Strict;
    s.likes.ack_timeout_ms = 1500;
    let app = TestApp::spawn_with(Backend::RedisPg, |t| {
        t.redis_url = s.redis_url.clone();
        t.database_url = s.database_url.clone();
        t.production = s.production.clone();
        t.likes = s.likes.clone();
    })
    .await;
    let users = app.seed_users(3).await;
    let post = app.post(&users[0]).await;
    let pool = PgPool::connect(s.database_url.as_deref().expect("db"))
        .await
        .expect("pg");
    for u in &users[..2] {
        assert_eq!(app.like(u, post).await.status(), StatusCode::OK);
        // No drain: the row is there when the answer is.
        let liked: bool =
            sqlx::query_scalar("SELECT liked FROM likes WHERE post_id = $1 AND user_id = $2")
                .bind(post)
                .bind(u.id)
                .fetch_one(&pool)
                .await
                .expect("row present at answer time");
        assert!(liked);
    }
    pool.close().await;
    pg.stop();
    let r = app.like(&users[2], post).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unavailable");
    pg.start_again();
    // Not acknowledged, but not lost either: it lands once PostgreSQL is back.
    app.drain().await;
    let mut p = app.production().await;
    assert_post_consistent(&mut p, post).await;
    assert_eq!(app.get_post(Some(&users[2]), post).await["likedByMe"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_separate_worker_process_applies_the_backlog() {
    separate_worker_and_reconcile_commands(Backend::RedisPg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_separate_worker_process_applies_the_backlog_on_a_cluster() {
    separate_worker_and_reconcile_commands(Backend::ClusterPg).await;
}

/// `tally worker` applies what an API node without a worker left in the
/// streams, and `tally reconcile` then finds no drift.
async fn separate_worker_and_reconcile_commands(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.production.sync.in_process = false).await;
    let users = app.seed_users(30).await;
    let post = app.post(&users[0]).await;
    join_all(users.iter().map(|u| app.like(u, post))).await;
    let mut p = app.production().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let backlog = tally_store::production::sync::backlog(&mut p.redis, &p.keys)
        .await
        .expect("backlog");
    assert_eq!(backlog, 30, "no worker runs in the API node");
    // What the load panel plots: the same backlog, and the age of its
    // oldest event (at least the 200 ms slept).
    let status = app.state.likes.sync_status().await.expect("sync status");
    assert_eq!(status.backlog, 30);
    assert!(status.lag_ms >= 200.0, "{status:?}");
    let mut worker = std::process::Command::new(crate::nodes::BIN)
        .arg("worker")
        .args(crate::nodes::backend_args(&app.settings))
        .env(
            "TALLY_PARTITIONS",
            app.settings.production.partitions.to_string(),
        )
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("spawn tally worker");
    app.drain().await;
    let _ = worker.kill();
    let _ = worker.wait();
    let status = app.state.likes.sync_status().await.expect("sync status");
    assert_eq!((status.backlog, status.lag_ms), (0, 0.0));
    assert_post_consistent(&mut p, post).await;
    assert_eq!(app.all_likers(post).await.len(), 30);

    let reconcile = std::process::Command::new(crate::nodes::BIN)
        .arg("reconcile")
        .args(crate::nodes::backend_args(&app.settings))
        .env(
            "TALLY_PARTITIONS",
            app.settings.production.partitions.to_string(),
        )
        .env("RUST_LOG", "warn")
        .output()
        .expect("run tally reconcile");
    let report = String::from_utf8_lossy(&reconcile.stdout);
    assert!(reconcile.status.success(), "tally reconcile: {report}");
    let report: serde_json::Value = serde_json::from_str(&report).expect("a JSON report");
    assert_eq!(report["posts_checked"], 1, "{report}");
    assert_eq!(report["redis_likers_drift"], 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_returns_to_redis_after_an_outage_without_writes() {
    let mut redis = ExtraRedis::start();
    let app = TestApp::spawn_with(Backend::RedisPg, |s| s.redis_url = Some(redis.url())).await;
    let users = app.seed_users(1).await;
    let post = app.post(&users[0]).await;
    redis.kill();
    // A read notices the outage; no like is written while Redis is down.
    assert_eq!(app.get_post(None, post).await["likeCount"], 0);
    assert_eq!(readiness(&app).await, "degraded");
    redis.restart();
    wait_for_readiness(&app, "ready", 10, "node stayed on the fallback path").await;
    assert_eq!(app.like(&users[0], post).await.status(), StatusCode::OK);
}

/// Polls `/readyz` until its status is `want`; fails with `why` after `secs`.
async fn wait_for_readiness(app: &TestApp, want: &str, secs: u64, why: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while readiness(app).await != want {
        assert!(std::time::Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/readyz`'s status: ready, degraded or down.
async fn readiness(app: &TestApp) -> String {
    app.get_json("/readyz").await["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A private Redis for the app, with a short timeout so the test is quick.
async fn app_on(redis: &ExtraRedis) -> TestApp {
    let url = redis.url();
    TestApp::spawn_with(Backend::RedisPg, move |s| {
        s.redis_url = Some(url);
        s.production.redis_timeout_ms = 300;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_redis_answers_503_and_keeps_the_fast_path() {
    let redis = ExtraRedis::start();
    let app = app_on(&redis).await;
    let users = app.seed_users(2).await;
    let post = app.post(&users[0]).await;
    assert_eq!(app.like(&users[0], post).await.status(), StatusCode::OK);

    // Frozen for about one timeout: the like cannot be answered for sure.
    redis.pause();
    let stalled = app.like(&users[1], post).await;
    redis.resume();
    crate::helpers::assert_error(stalled, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    // One slow reply is not an outage: the node stays on Redis...
    assert_eq!(readiness(&app).await, "ready");
    // ...and the idempotent retry settles the unknown outcome.
    assert_eq!(answer(app.like(&users[1], post).await).await, (true, 2));
    app.drain().await;
    assert_eq!(app.all_likers(post).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_redis_switches_the_node_to_postgres_and_back() {
    let redis = ExtraRedis::start();
    let app = app_on(&redis).await;
    let users = app.seed_users(3).await;
    let post = app.post(&users[0]).await;
    assert_eq!(app.like(&users[0], post).await.status(), StatusCode::OK);
    app.drain().await;

    // Frozen for good: connections stay open, nothing answers, nothing is
    // refused. The watcher's unanswered pings switch the node over.
    redis.pause();
    wait_for_readiness(&app, "degraded", 10, "node did not switch to PostgreSQL").await;
    assert_eq!(answer(app.like(&users[1], post).await).await, (true, 2));

    redis.resume();
    wait_for_readiness(&app, "ready", 30, "node did not return to Redis").await;
    assert_eq!(answer(app.like(&users[2], post).await).await, (true, 3));
    app.drain().await;
    assert_eq!(app.all_likers(post).await.len(), 3);
}

/// Migration 0002 turns `likes` into a hash-partitioned table and keeps
/// every row, tombstones and versions included; the backend then reads
/// and writes them as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioning_likes_keeps_every_row() {
    use tally_store::production::MIGRATOR;
    let url = crate::helpers::fresh_database(&test_admin_database_url()).await;
    let pg = PgPool::connect(&url).await.expect("connect");
    MIGRATOR
        .run_to(1, &pg)
        .await
        .expect("the schema before partitioning");
    sqlx::query(
        "INSERT INTO users (username, password_hash, created_at) \
         SELECT 'u' || n, '!', 0 FROM generate_series(1, 50) n",
    )
    .execute(&pg)
    .await
    .expect("users");
    sqlx::query(
        "INSERT INTO posts (author_id, caption, image_file, thumb_file, width, height, created_at) \
         SELECT 1, 'p', 'a', 'b', 1, 1, 0 FROM generate_series(1, 40)",
    )
    .execute(&pg)
    .await
    .expect("posts");
    // Every (post, user) pair, a third of them tombstones, each with its own version.
    sqlx::query(
        "INSERT INTO likes (post_id, user_id, liked, version, liked_at) \
         SELECT p, u, (p + u) % 3 <> 0, p * 1000 + u, p * u FROM generate_series(1, 40) p, \
         generate_series(1, 50) u",
    )
    .execute(&pg)
    .await
    .expect("likes");
    let all = "SELECT post_id, user_id, liked, version, liked_at FROM likes \
               ORDER BY post_id, user_id";
    let rows = |pg: PgPool| async move {
        sqlx::query(all)
            .fetch_all(&pg)
            .await
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    r.get::<i64, _>(0),
                    r.get::<i64, _>(1),
                    r.get::<bool, _>(2),
                    r.get::<i64, _>(3),
                    r.get::<i64, _>(4),
                )
            })
            .collect::<Vec<_>>()
    };
    let before = rows(pg.clone()).await;
    assert_eq!(before.len(), 2000);

    MIGRATOR.run(&pg).await.expect("partition likes");
    assert_eq!(rows(pg.clone()).await, before, "every row, as it was");
    let (kind, partitions): (String, i64) = sqlx::query_as(
        "SELECT c.relkind::text, (SELECT count(*) FROM pg_inherits WHERE inhparent = c.oid) \
         FROM pg_class c WHERE c.relname = 'likes'",
    )
    .fetch_one(&pg)
    .await
    .expect("catalog");
    assert_eq!((kind.as_str(), partitions), ("p", 16));

    // The backend reads and writes the partitioned table as before.
    let mut s = Settings::for_tests(std::env::temp_dir());
    s.redis_url = Some(test_redis_url());
    s.database_url = Some(url);
    s.production.key_prefix = crate::helpers::unique_name();
    let p = connect(&s).await;
    let liked: BTreeSet<i64> = (1..=50).filter(|u| (7 + u) % 3 != 0).collect();
    let read: BTreeSet<i64> = p
        .likers_of(7)
        .await
        .expect("likers")
        .expect("post 7")
        .into_iter()
        .collect();
    assert_eq!(read, liked);
}

/// Replicated durability: a like is answered once a replica of its master
/// has it (so a promoted replica has every acknowledged like); with no
/// replica answering it is not acknowledged (503, outcome unknown).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicated_mode_answers_once_a_replica_has_the_like() {
    let master = ExtraRedis::start();
    let replica = ExtraRedis::start_replica_of(&master);
    let app = TestApp::spawn_with(Backend::RedisPg, |s| {
        s.redis_url = Some(master.url());
        s.production.durability = Durability::Replicated;
        // Generous: on a busy machine the replica may be slow to answer.
        s.production.replication_timeout_ms = 3000;
    })
    .await;
    let users = app.seed_users(3).await;
    let post = app.post(&users[0]).await;
    let keys = tally_store::production::Keys::new(
        &app.settings.production.key_prefix,
        app.settings.production.partitions,
    );
    let mut on_replica = redis::Client::open(replica.url())
        .expect("replica url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the replica");
    for (n, user) in users.iter().enumerate() {
        assert_eq!(
            answer(app.like(user, post).await).await,
            (true, n as i64 + 1)
        );
        let there: bool = redis::cmd("SISMEMBER")
            .arg(keys.likers(post))
            .arg(user.id)
            .query_async(&mut on_replica)
            .await
            .expect("read the replica");
        assert!(there, "like {n} was answered before the replica had it");
    }
    // A repeat is answered too.
    assert_eq!(answer(app.like(&users[0], post).await).await, (true, 3));

    // With the replica frozen no like is acknowledged, and neither is the
    // retry of one: a repeat waits for the change it repeats.
    replica.pause();
    for attempt in ["the unlike", "its retry"] {
        let started = std::time::Instant::now();
        crate::helpers::assert_error(
            app.unlike(&users[1], post).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        )
        .await;
        assert!(
            started.elapsed() >= Duration::from_millis(2900),
            "{attempt} waited for a replica ({:?})",
            started.elapsed()
        );
    }
    replica.resume();
    assert_eq!(answer(app.unlike(&users[1], post).await).await, (false, 2));
    // The master applied it; the client learns the outcome by reading back.
    assert_eq!(
        app.get_post(Some(&users[1]), post).await["likedByMe"],
        false
    );
}

/// A streaming replica serves feed and likers pages, which may trail the
/// primary; a post reads from the primary right after it is created; counts
/// come from Redis, so a replica that lags never makes a like wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_replica_serves_feeds_and_likers_and_never_makes_a_like_wrong() {
    let primary = ExtraPostgres::start();
    let standby = ExtraPostgres::start_standby_of(&primary);
    let app = TestApp::spawn_with(Backend::RedisPg, |s| {
        s.database_url = Some(primary.url());
        s.production.database_read_url = Some(standby.url());
    })
    .await;
    let users = app.seed_users(2).await;
    let post = app.post(&users[0]).await;
    assert_eq!(
        app.get_post(None, post).await["id"],
        post,
        "from the primary"
    );

    // The feed comes from the standby, once it has replayed the post.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app.get_json("/v1/posts?limit=10").await["items"][0]["id"] != post {
        assert!(
            std::time::Instant::now() < deadline,
            "the feed never showed the post"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    standby.pause_replay(true).await;
    // A post created now is read by id (the primary), not yet in the feed.
    let hidden = app.post(&users[0]).await;
    assert_eq!(app.get_post(None, hidden).await["id"], hidden);
    assert_eq!(
        app.get_json("/v1/posts?limit=10").await["items"][0]["id"],
        post,
        "the feed comes from the paused standby"
    );
    assert_eq!(answer(app.like(&users[1], post).await).await, (true, 1));
    assert_eq!(app.get_post(Some(&users[1]), post).await["likeCount"], 1);
    app.drain().await;
    let likers = format!("/v1/posts/{post}/likers?limit=10");
    assert_eq!(
        app.get_json(&likers).await["items"],
        serde_json::json!([]),
        "who liked comes from the paused standby, which trails"
    );
    assert_eq!(
        app.get_post(None, post).await["likeCount"],
        1,
        "counts do not"
    );

    standby.pause_replay(false).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app.get_json(&likers).await["items"][0]["id"] != users[1].id {
        assert!(
            std::time::Instant::now() < deadline,
            "the likers never caught up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
