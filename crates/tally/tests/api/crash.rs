//! `kill -9` during concurrent likes loses nothing that was answered 200
//! (embedded backend; the production backend's crash tests are in
//! `production.rs`).
//!
//! This drives the real binary: seed users with `tally users seed`, serve,
//! like from many users at once, SIGKILL the process mid-load, restart on
//! the same data dir, and compare every (user, post) state with the answers.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Client;
use serde_json::Value;
use tally_server::config::Settings;

use crate::helpers::all_pages;
use crate::nodes::{Load, Node, create_post, seed};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_no_acknowledged_like() {
    let dir = tempfile::tempdir().expect("dir");
    let settings = Settings::for_tests(dir.path().to_path_buf());
    let users = seed(&settings, dir.path(), 150);
    assert_eq!(users.len(), 150);
    let mut server = Node::start(&settings, dir.path());
    let client = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut posts = Vec::new();
    for _ in 0..3 {
        posts.push(create_post(&client, &server.base, &users[0].1).await);
    }

    // Each user stops at its first unanswered request (outcome unknown).
    let load = Load::start(&client, vec![server.base.clone()], &users, &posts, false);
    load.wait_answers(2_000).await;
    server.kill_9();
    let ledger = load.finish().await;

    let server = Node::start(&settings, dir.path());
    let tokens: HashMap<i64, String> = users.into_iter().collect();
    let mut settled = 0;
    for (&(user, post), seen) in &ledger {
        let v: Value = client
            .get(format!("{}/v1/posts/{post}", server.base))
            .bearer_auth(&tokens[&user])
            .send()
            .await
            .expect("get post")
            .json()
            .await
            .expect("json");
        let liked = v["likedByMe"].as_bool().expect("likedByMe");
        assert!(
            seen.allows(liked),
            "user {user} post {post}: answers {seen:?}, now {liked}"
        );
        settled += usize::from(seen.in_flight.is_none());
    }
    assert!(
        settled > 100,
        "too few answered pairs to mean anything: {settled}"
    );
    for post in posts {
        let p: Value = client
            .get(format!("{}/v1/posts/{post}", server.base))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        let likers = all_pages(
            &client,
            &format!("{}/v1/posts/{post}/likers?limit=100", server.base),
        )
        .await
        .len();
        assert_eq!(
            p["likeCount"].as_u64().expect("count") as usize,
            likers,
            "post {post}: count == likers"
        );
    }
}
