//! Trending posts: ranked by likes gained in the window, on every backend.
//! The node's ranking cache is off (`trending_cache_ms = 0`) so each read
//! sees the likes before it; the cache is the same code on every backend.

use reqwest::StatusCode;
use serde_json::Value;
use tally_store::trending::{Granularity, HOUR_BUCKET_TTL_MS, MINUTE_BUCKET_TTL_MS};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, TestUser, all_pages, answer, assert_error};

backend_tests!(
    trending_ranks_by_likes_gained,
    trending_pages_walk_the_whole_ranking,
    trending_rejects_bad_windows_and_cursors,
    trending_skips_posts_the_catalog_lost,
    trending_buckets_expire,
);

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |s| s.trending_cache_ms = 0).await
}

/// A page of trending posts as (id, score), seen by `viewer`.
async fn trending(app: &TestApp, viewer: Option<&TestUser>, query: &str) -> Value {
    let mut r = app
        .client
        .get(app.url(&format!("/v1/posts/trending?{query}")));
    if let Some(v) = viewer {
        r = r.bearer_auth(&v.token);
    }
    let r = r.send().await.expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.expect("json")
}

fn ranked(page: &Value) -> Vec<(i64, i64)> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| {
            (
                p["id"].as_i64().expect("id"),
                p["score"].as_i64().expect("score"),
            )
        })
        .collect()
}

/// Whether `key` exists; if it does, it must expire within `ttl` ms.
async fn expires_within(p: &mut tally_store::production::Production, key: &str, ttl: i64) -> bool {
    let pttl: i64 = redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut p.redis)
        .await
        .expect("PTTL");
    if pttl == -2 {
        return false;
    }
    assert!(pttl > 0 && pttl <= ttl, "{key}: PTTL {pttl} > {ttl}");
    true
}

async fn likes(app: &TestApp, users: &[TestUser], post: i64) {
    for u in users {
        answer(app.like(u, post).await).await;
    }
}

async fn trending_ranks_by_likes_gained(backend: Backend) {
    let app = spawn(backend).await;
    let users = app.seed_users(3).await;
    let (a, b, c) = (
        app.post(&users[0]).await,
        app.post(&users[0]).await,
        app.post(&users[0]).await,
    );
    let d = app.post(&users[0]).await; // never liked: not trending
    assert!(ranked(&trending(&app, None, "").await).is_empty());
    likes(&app, &users[..1], b).await;
    likes(&app, &users[..3], a).await;
    likes(&app, &users[1..3], c).await;
    // A repeated like changes nothing, so it gains nothing.
    likes(&app, &users[..1], b).await;

    for window in ["1h", "24h"] {
        let page = trending(&app, Some(&users[0]), &format!("window={window}")).await;
        assert_eq!(page["window"], window);
        assert_eq!(ranked(&page), [(a, 3), (c, 2), (b, 1)], "{window}");
        // Each item is the feed's post view.
        let items = page["items"].as_array().expect("items");
        assert_eq!(items[0]["likeCount"], 3);
        assert_eq!(items[0]["likedByMe"], true);
        assert_eq!(items[1]["likedByMe"], false);
        assert!(items[0]["thumbnailUrl"].is_string());
        assert!(page["nextCursor"].is_null());
    }
    assert!(
        !ranked(&trending(&app, None, "").await)
            .iter()
            .any(|(p, _)| *p == d)
    );

    // Unlikes lower a post: a ties b at 1, and the lower id goes first.
    answer(app.unlike(&users[1], a).await).await;
    answer(app.unlike(&users[2], a).await).await;
    assert_eq!(
        ranked(&trending(&app, None, "window=1h").await),
        [(c, 2), (a, 1), (b, 1)]
    );
    // A post whose likes were all undone drops out (a toggle counts too).
    answer(app.toggle(&users[0], b).await).await;
    assert_eq!(
        ranked(&trending(&app, None, "window=24h").await),
        [(c, 2), (a, 1)]
    );
}

async fn trending_pages_walk_the_whole_ranking(backend: Backend) {
    let app = spawn(backend).await;
    let users = app.seed_users(4).await;
    let mut posts = Vec::new();
    for _ in 0..7 {
        posts.push(app.post(&users[0]).await);
    }
    // Scores 4, 3, 3, 2, 1, 1, 1: ties across page boundaries.
    for (post, n) in posts.iter().zip([4, 3, 3, 2, 1, 1, 1]) {
        likes(&app, &users[..n], *post).await;
    }
    let whole: Vec<(i64, i64)> = all_pages(
        &app.client,
        &app.url("/v1/posts/trending?window=24h&limit=2"),
    )
    .await
    .iter()
    .map(|p| {
        (
            p["id"].as_i64().expect("id"),
            p["score"].as_i64().expect("score"),
        )
    })
    .collect();
    let expected: Vec<(i64, i64)> = posts.iter().copied().zip([4, 3, 3, 2, 1, 1, 1]).collect();
    assert_eq!(whole, expected);

    // Page by page: 2 + 2 + 2 + 1, the last without a cursor.
    let mut cursor = String::new();
    let mut sizes = Vec::new();
    loop {
        let page = trending(&app, None, &format!("window=24h&limit=2{cursor}")).await;
        sizes.push(ranked(&page).len());
        match page["nextCursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(sizes, [2, 2, 2, 1]);
}

async fn trending_rejects_bad_windows_and_cursors(backend: Backend) {
    let app = spawn(backend).await;
    let users = app.seed_users(1).await;
    for _ in 0..2 {
        let post = app.post(&users[0]).await;
        likes(&app, &users, post).await;
    }
    let first = trending(&app, None, "window=1h&limit=1").await;
    let cursor = first["nextCursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    for query in [
        "window=7d".to_owned(),
        "window=".to_owned(),
        "window=1H".to_owned(),
        "limit=0".to_owned(),
        "limit=101".to_owned(),
        "cursor=%21%21".to_owned(),
        // A feed cursor, and a cursor of the other window.
        "cursor=cDox".to_owned(),
        format!("window=24h&cursor={cursor}"),
    ] {
        let r = app.get(&format!("/v1/posts/trending?{query}")).await;
        assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    // The cursor works in its own window.
    let second = trending(&app, None, &format!("window=1h&limit=1&cursor={cursor}")).await;
    assert_eq!(ranked(&second).len(), 1);
}

/// A ranked post that is gone from the catalog (deleted behind the API's
/// back: there is no delete endpoint) is skipped, and pages still fill.
async fn trending_skips_posts_the_catalog_lost(backend: Backend) {
    let app = spawn(backend).await;
    let users = app.seed_users(3).await;
    let mut posts = Vec::new();
    for n in [3, 2, 1] {
        let post = app.post(&users[0]).await;
        likes(&app, &users[..n], post).await;
        posts.push(post);
    }
    let gone = posts[1];
    match backend {
        Backend::Embedded => {
            let pool = tally_store::embedded::open(app.data_dir.path())
                .await
                .expect("open");
            sqlx::query("DELETE FROM posts WHERE id = ?")
                .bind(gone)
                .execute(&pool)
                .await
                .expect("delete");
        }
        Backend::RedisPg | Backend::ClusterPg => {
            sqlx::query("DELETE FROM posts WHERE id = $1")
                .bind(gone)
                .execute(&app.production().await.pg)
                .await
                .expect("delete");
        }
    }
    let page = trending(&app, None, "limit=2").await;
    assert_eq!(ranked(&page), [(posts[0], 3), (posts[2], 1)]);
    assert!(page["nextCursor"].is_null());
    let walked: Vec<i64> = all_pages(&app.client, &app.url("/v1/posts/trending?limit=1"))
        .await
        .iter()
        .map(|p| p["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(walked, [posts[0], posts[2]]);
}

/// Old buckets expire: on Redis every bucket carries a TTL no longer than
/// the designed one (the embedded backend's pruning is unit-tested with
/// explicit times in tally-store's `trending`).
async fn trending_buckets_expire(backend: Backend) {
    if backend == Backend::Embedded {
        return;
    }
    let app = spawn(backend).await;
    let users = app.seed_users(1).await;
    let post = app.post(&users[0]).await;
    let before = tally_store::now_ms();
    likes(&app, &users, post).await;
    let after = tally_store::now_ms();
    let mut p = app.production().await;
    let partition = p.keys.partition(post);
    for (granularity, ttl) in [
        (Granularity::Minute, MINUTE_BUCKET_TTL_MS),
        (Granularity::Hour, HOUR_BUCKET_TTL_MS),
    ] {
        let mut found = 0;
        for bucket in granularity.bucket(before)..=granularity.bucket(after) {
            let key = p.keys.trend(partition, granularity, bucket);
            if !expires_within(&mut p, &key, ttl).await {
                continue; // no such bucket: the like landed in the other
            }
            let score: Option<f64> = redis::cmd("ZSCORE")
                .arg(&key)
                .arg(post)
                .query_async(&mut p.redis)
                .await
                .expect("ZSCORE");
            assert_eq!(score, Some(1.0), "{key}");
            found += 1;
        }
        assert_eq!(found, 1, "{granularity:?}: one bucket holds the like");
    }

    // The toggle's reply key moved to KEYS[7], after the buckets: a replayed
    // toggle (a cluster client re-sends a script after a dropped
    // connection) still answers what the first run did, and counts once.
    let script = redis::Script::new(include_str!("../../../tally-store/src/production/like.lua"));
    let now = tally_store::now_ms();
    let minute = p.keys.trend(
        partition,
        Granularity::Minute,
        Granularity::Minute.bucket(now),
    );
    let hour = p
        .keys
        .trend(partition, Granularity::Hour, Granularity::Hour.bucket(now));
    let cluster = p.redis.is_cluster();
    let mut answers = Vec::new();
    let mut scores = Vec::new();
    for _ in 0..2 {
        let answer: (i64, i64, i64, i64) = script
            .key(p.keys.count(post))
            .key(p.keys.likers(post))
            .key(p.keys.stream(partition))
            .key(p.keys.seq(partition))
            .key(&minute)
            .key(&hour)
            .key(p.keys.reply(post, "feed"))
            .arg(users[0].id)
            .arg("toggle")
            .arg(post)
            .arg(now)
            .arg(if cluster {
                p.keys.shard_channel(partition)
            } else {
                p.keys.live_channel()
            })
            .arg(if cluster { "1" } else { "0" })
            .arg(MINUTE_BUCKET_TTL_MS)
            .arg(HOUR_BUCKET_TTL_MS)
            .invoke_async(&mut p.redis)
            .await
            .expect("like script");
        answers.push(answer);
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(&hour)
            .arg(post)
            .query_async(&mut p.redis)
            .await
            .expect("ZSCORE");
        scores.push(score);
    }
    assert_eq!(
        (answers[0].0, answers[0].1, answers[0].2),
        (1, 0, 0),
        "unliked"
    );
    assert_eq!(answers[1], answers[0], "the replay answers the first run");
    assert_eq!(scores[1], scores[0], "the replay counts nothing");
    // The like and its undoing net to zero: the post is not trending.
    let before = tally_store::now_ms();
    assert!(ranked(&trending(&app, None, "").await).is_empty());
    assert!(ranked(&trending(&app, None, "window=24h").await).is_empty());
    let after = tally_store::now_ms();

    // A read stores each partition's sum of the older buckets for the
    // current bucket's period, which then expires too.
    for granularity in [Granularity::Minute, Granularity::Hour] {
        let mut found = 0;
        for bucket in granularity.bucket(before)..=granularity.bucket(after) {
            let key = p.keys.trend_sum(partition, granularity, bucket);
            if !expires_within(&mut p, &key, granularity.millis() + 60_000).await {
                continue;
            }
            found += 1;
        }
        assert_eq!(found, 1, "{granularity:?}: one stored sum");
    }
}
