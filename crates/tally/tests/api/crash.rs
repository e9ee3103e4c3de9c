//! `kill -9` during concurrent likes loses nothing that was answered 200.
//!
//! This drives the real binary: seed users with `tally users seed`, serve,
//! like from many users at once, SIGKILL the process mid-load, restart on
//! the same data dir, and compare every (user, post) state with the answers.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::helpers::{all_pages, png};

const BIN: &str = env!("CARGO_BIN_EXE_tally");

struct Server {
    child: Child,
    base: String,
}

fn start(data_dir: &Path) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("TALLY_RATE_LIMITS__USER_WRITES_PER_SEC", "0")
        .env("TALLY_RATE_LIMITS__AUTH_PER_MIN_PER_IP", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn tally serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read stdout");
    let base = line
        .trim()
        .strip_prefix("tally listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    Server { child, base }
}

/// What the load saw for one (user, post): the last answered state, and
/// whether a request was in flight (outcome unknown) when the server died.
#[derive(Default, Clone, Copy, Debug)]
struct Seen {
    acked: Option<bool>,
    in_flight: Option<bool>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_no_acknowledged_like() {
    let dir = tempfile::tempdir().unwrap();
    let tokens_file = dir.path().join("tokens.txt");
    let status = Command::new(BIN)
        .args(["users", "seed", "--count", "150", "--data-dir"])
        .arg(dir.path())
        .arg("--tokens-out")
        .arg(&tokens_file)
        .env("RUST_LOG", "warn")
        .status()
        .expect("run tally users seed");
    assert!(status.success());
    let users: Vec<(i64, String)> = std::fs::read_to_string(&tokens_file)
        .unwrap()
        .lines()
        .map(|l| {
            let (id, token) = l.split_once(' ').unwrap();
            (id.parse().unwrap(), token.to_owned())
        })
        .collect();
    assert_eq!(users.len(), 150);

    let mut server = start(dir.path());
    let client = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut posts = Vec::new();
    for i in 0..3 {
        let form = reqwest::multipart::Form::new()
            .part(
                "image",
                reqwest::multipart::Part::bytes(png(8, 8)).file_name("p.png"),
            )
            .text("caption", format!("post {i}"));
        let r = client
            .post(format!("{}/v1/posts", server.base))
            .bearer_auth(&users[0].1)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        posts.push(r.json::<Value>().await.unwrap()["id"].as_i64().unwrap());
    }

    let seen: Arc<Mutex<HashMap<(i64, i64), Seen>>> = Arc::default();
    let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut load = Vec::new();
    for (user, token) in users.clone() {
        let (client, base, posts, seen, answered) = (
            client.clone(),
            server.base.clone(),
            posts.clone(),
            seen.clone(),
            answered.clone(),
        );
        load.push(tokio::spawn(async move {
            loop {
                let post = posts[rand::random_range(0..posts.len())];
                let like = rand::random_bool(0.6);
                seen.lock()
                    .unwrap()
                    .entry((user, post))
                    .or_default()
                    .in_flight = Some(like);
                let method = if like {
                    reqwest::Method::PUT
                } else {
                    reqwest::Method::DELETE
                };
                let result = client
                    .request(method, format!("{base}/v1/posts/{post}/like"))
                    .bearer_auth(&token)
                    .send()
                    .await;
                let ok = match result {
                    Ok(r) if r.status() == StatusCode::OK => r.json::<Value>().await.ok(),
                    _ => None,
                };
                let Some(body) = ok else { return };
                assert_eq!(body["liked"].as_bool(), Some(like));
                let mut seen = seen.lock().unwrap();
                let entry = seen.entry((user, post)).or_default();
                entry.acked = Some(like);
                entry.in_flight = None;
                answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    // Let the load run until a good number of likes were answered.
    while answered.load(std::sync::atomic::Ordering::Relaxed) < 2_000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().expect("SIGKILL"); // kill() is SIGKILL on Unix
    server.child.wait().unwrap();
    for task in load {
        task.await.unwrap();
    }

    let mut server = start(dir.path());
    let seen = seen.lock().unwrap().clone();
    let tokens: HashMap<i64, String> = users.into_iter().collect();
    let mut checked = 0;
    for (&(user, post), s) in &seen {
        let r = client
            .get(format!("{}/v1/posts/{post}", server.base))
            .bearer_auth(&tokens[&user])
            .send()
            .await
            .unwrap();
        let liked = r.json::<Value>().await.unwrap()["likedByMe"]
            .as_bool()
            .unwrap();
        match (s.acked, s.in_flight) {
            // A request in flight at the kill may or may not have landed.
            (acked, Some(pending)) => assert!(
                liked == pending || liked == acked.unwrap_or(false),
                "user {user} post {post}: {s:?}, now {liked}"
            ),
            (Some(acked), None) => {
                assert_eq!(
                    liked, acked,
                    "acknowledged state lost: user {user} post {post}"
                );
                checked += 1;
            }
            (None, None) => unreachable!(),
        }
    }
    assert!(
        checked > 100,
        "too few acknowledged pairs to mean anything: {checked}"
    );
    for post in posts {
        let p: Value = client
            .get(format!("{}/v1/posts/{post}", server.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let likers = all_pages(
            &client,
            &format!("{}/v1/posts/{post}/likers?limit=100", server.base),
        )
        .await
        .len();
        assert_eq!(
            p["likeCount"].as_u64().unwrap() as usize,
            likers,
            "post {post}: count == likers"
        );
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
