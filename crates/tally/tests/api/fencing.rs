//! Fencing of the write-behind and its worker faults (issue 12, defect 9):
//! a `tally worker` paused past its lease cannot commit once another has
//! taken its partitions over, a killed one loses nothing, and the `applied`
//! watermark (what strict durability waits for) never passes an entry that
//! is not in PostgreSQL. Real `tally worker` processes, real Redis and
//! PostgreSQL; each test has its own database and key prefix.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::Value;
use reqwest::{Client, StatusCode};
use sqlx::PgPool;
use tally_server::config::Settings;
use tally_store::production::keys::GROUP;
use tally_store::production::pg::{self, Applied, Fence, LikeEvent};

use crate::helpers::{Backend, TestApp, test_admin_database_url, test_cluster_url, test_redis_url};
use crate::nodes::{BIN, Load, Node, backend_args, create_post, node_env, seed};
use crate::production::{assert_exact, assert_post_consistent, connect, settings};

/// What a worker logs when PostgreSQL refuses its batch (see
/// `sync::worker`): the proof that a stale commit was attempted and refused.
const REFUSED: &str = "commit refused (fenced)";

/// A `tally worker` process, its output in a file the test reads.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(settings: &Settings, dir: &Path, name: &str) -> Self {
        let log = dir.join(format!("worker-{name}.log"));
        let file = File::create(&log).expect("worker log");
        let mut cmd = Command::new(BIN);
        cmd.arg("worker")
            .args(backend_args(settings))
            .stdout(Stdio::from(file.try_clone().expect("worker log")))
            .stderr(Stdio::from(file));
        node_env(&mut cmd, settings);
        cmd.env("RUST_LOG", "warn,tally_store::production::sync=info");
        let child = cmd.spawn().expect("spawn tally worker");
        Self { child, log }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {}", self.child.id());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// Polls `check` until it holds; fails with `what` after `secs`.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "not within {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The lease epoch registered for a partition stream (None: never taken).
async fn epoch(pg: &PgPool, stream: &str) -> Option<i64> {
    sqlx::query_scalar("SELECT epoch FROM sync_fence WHERE stream = $1")
        .bind(stream)
        .fetch_optional(pg)
        .await
        .expect("read sync_fence")
}

async fn epochs(pg: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT stream, epoch FROM sync_fence ORDER BY stream")
        .fetch_all(pg)
        .await
        .expect("read sync_fence")
}

/// Backends of this database waiting for a lock.
async fn lock_waiters(pg: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(pg)
    .await
    .expect("pg_stat_activity")
}

fn start_node(s: &Settings, dir: &Path) -> Node {
    Node::start_with(s, &dir.join("node"), &[("TALLY_SYNC__IN_PROCESS", "false")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_paused_past_its_lease_cannot_commit_after_a_takeover() {
    paused_worker(test_redis_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_paused_past_its_lease_cannot_commit_after_a_takeover_on_a_cluster() {
    paused_worker(test_cluster_url()).await;
}

/// Worker a is stopped (SIGSTOP) in the middle of a batch, past its lease,
/// while likes flow; worker b takes over; a is resumed (SIGCONT) and tries
/// to commit: PostgreSQL refuses, and the ledger is exact.
///
/// To stop a inside its batch for sure, the test holds a post's row lock:
/// a's transaction waits on it, a is stopped, b registers its epoch, the
/// lock is released (a's session takes it first: b's batch now waits for
/// a), and a resumes with its batch's fence check still to run.
async fn paused_worker(redis_url: String) {
    let dir = tempfile::tempdir().expect("dir");
    let s = settings(&redis_url, &test_admin_database_url(), dir.path()).await;
    let users = seed(&s, dir.path(), 100);
    let node = start_node(&s, dir.path());
    let client = client();
    let mut posts = Vec::new();
    for _ in 0..4 {
        posts.push(create_post(&client, &node.base, &users[0].1).await);
    }
    let held = posts[0];
    let p = connect(&s).await;
    let stream = p.keys.stream(p.keys.partition(held));
    let a = Worker::start(&s, dir.path(), "a");
    let load = Load::start(&client, vec![node.base.clone()], &users, &posts, true);
    load.wait_answers(300).await;
    eventually(60, "worker a takes the partitions", || async {
        epoch(&p.pg, &stream).await.is_some()
    })
    .await;
    let epoch_a = epoch(&p.pg, &stream).await.expect("a's epoch");

    let mut lock = p.pg.begin().await.expect("begin");
    sqlx::query("SELECT id FROM posts WHERE id = $1 FOR UPDATE")
        .bind(held)
        .execute(&mut *lock)
        .await
        .expect("lock the post");
    eventually(60, "worker a's batch waits on the post", || async {
        lock_waiters(&p.pg).await >= 1
    })
    .await;
    a.signal("-STOP");

    let b = Worker::start(&s, dir.path(), "b");
    eventually(60, "worker b takes a's partitions over", || async {
        epoch(&p.pg, &stream).await > Some(epoch_a)
    })
    .await;
    // Likes go on while a is paused past its lease.
    load.wait_answers(300).await;
    lock.rollback().await.expect("release the post");
    a.signal("-CONT");
    eventually(60, "worker a's stale batch is refused", || async {
        a.log().contains(REFUSED)
    })
    .await;
    load.wait_answers(300).await;
    let ledger = load.finish().await;
    assert_exact(&s, &ledger, &posts).await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_worker_under_load_another_takes_over_exactly() {
    killed_worker(test_redis_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_worker_under_load_another_takes_over_exactly_on_a_cluster() {
    killed_worker(test_cluster_url()).await;
}

/// Worker a applies under load, b waits (a holds every lease); a is killed
/// with SIGKILL mid-load; b takes every partition over (each epoch moves)
/// and applies what a left, and the ledger is exact.
async fn killed_worker(redis_url: String) {
    let dir = tempfile::tempdir().expect("dir");
    let s = settings(&redis_url, &test_admin_database_url(), dir.path()).await;
    let partitions = s.production.partitions as usize;
    let users = seed(&s, dir.path(), 100);
    let node = start_node(&s, dir.path());
    let client = client();
    let mut posts = Vec::new();
    for _ in 0..4 {
        posts.push(create_post(&client, &node.base, &users[0].1).await);
    }
    let p = connect(&s).await;
    let mut a = Worker::start(&s, dir.path(), "a");
    let load = Load::start(&client, vec![node.base.clone()], &users, &posts, true);
    eventually(60, "worker a takes every partition", || async {
        epochs(&p.pg).await.len() == partitions
    })
    .await;
    let before = epochs(&p.pg).await;
    let _b = Worker::start(&s, dir.path(), "b");
    load.wait_answers(500).await;
    a.kill_9();
    let killed = Instant::now();
    eventually(60, "worker b takes every partition over", || async {
        let now = epochs(&p.pg).await;
        now.len() == before.len() && now.iter().zip(&before).all(|(n, b)| n.1 > b.1)
    })
    .await;
    // Bounded by the lease (1 s here) plus a third of it for b's next
    // look: printed for docs/OPERATIONS.md, not asserted (busy machines).
    eprintln!(
        "worker killed: every partition taken over in {:?} (lease {} ms)",
        killed.elapsed(),
        s.production.sync.lease_ttl_ms
    );
    load.wait_answers(500).await;
    let ledger = load.finish().await;
    assert_exact(&s, &ledger, &posts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_applied_watermark_stays_contiguous() {
    the_watermark_stops_below_an_entry_another_consumer_holds(Backend::RedisPg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_applied_watermark_stays_contiguous_on_a_cluster() {
    the_watermark_stops_below_an_entry_another_consumer_holds(Backend::ClusterPg).await;
}

/// The `applied` watermark rises only over a contiguous prefix: entries a
/// stalled consumer read and never acknowledged hold it back, although the
/// worker applied newer ones; once they are claimed and applied it passes
/// them.
async fn the_watermark_stops_below_an_entry_another_consumer_holds(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.production.sync.in_process = false;
        s.production.sync.lease_ttl_ms = 2000;
    })
    .await;
    let users = app.seed_users(6).await;
    let post = app.post(&users[0]).await;
    let mut p = app.production().await;
    let partition = p.keys.partition(post);
    let stream = p.keys.stream(partition);
    let mut worker = p.worker();
    worker.try_execute_task().await.expect("first round");

    for u in &users[..3] {
        assert_eq!(app.like(u, post).await.status(), StatusCode::OK);
    }
    // A consumer that reads and stalls (a paused worker, seen from Redis).
    let read: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("stalled")
        .arg("COUNT")
        .arg(3)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut p.redis)
        .await
        .expect("XREADGROUP");
    assert_ne!(read, Value::Nil, "the stalled consumer read nothing");
    for u in &users[3..] {
        assert_eq!(app.like(u, post).await.status(), StatusCode::OK);
    }
    let versions = versions(&mut p.redis, &stream).await;
    assert_eq!(versions.len(), 6, "{versions:?}");

    worker.try_execute_task().await.expect("round");
    let liked = likers(&p.pg, post).await;
    let later: BTreeSet<i64> = users[3..].iter().map(|u| u.id).collect();
    assert_eq!(liked, later, "the worker applies what it read");
    let watermark = applied(&mut p.redis, &p.keys.applied(partition)).await;
    assert!(
        watermark < versions[0],
        "the watermark ({watermark}) passed the stalled entry ({}), which PostgreSQL lacks",
        versions[0]
    );

    // After a lease without an acknowledgement, the worker claims the
    // stalled entries, applies them, and the watermark moves on.
    let deadline = Instant::now() + Duration::from_secs(60);
    while applied(&mut p.redis, &p.keys.applied(partition)).await < versions[5] {
        assert!(Instant::now() < deadline, "the watermark never caught up");
        worker.try_execute_task().await.expect("round");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all: BTreeSet<i64> = users.iter().map(|u| u.id).collect();
    assert_eq!(likers(&p.pg, post).await, all);
    assert_post_consistent(&mut p, post).await;
}

async fn likers(pg: &PgPool, post: i64) -> BTreeSet<i64> {
    sqlx::query_scalar("SELECT user_id FROM likes WHERE post_id = $1 AND liked")
        .bind(post)
        .fetch_all(pg)
        .await
        .expect("likers")
        .into_iter()
        .collect()
}

async fn applied(redis: &mut tally_store::production::RedisConn, key: &str) -> i64 {
    let v: Option<i64> = redis::cmd("GET")
        .arg(key)
        .query_async(redis)
        .await
        .expect("GET applied");
    v.unwrap_or(0)
}

/// The versions of a stream's entries, oldest first.
async fn versions(redis: &mut tally_store::production::RedisConn, stream: &str) -> Vec<i64> {
    let Value::Array(entries) = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(redis)
        .await
        .expect("XRANGE")
    else {
        panic!("XRANGE answered no array");
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        other => panic!("not a string: {other:?}"),
    };
    entries
        .iter()
        .map(|entry| {
            let Value::Array(pair) = entry else {
                panic!("entry {entry:?}")
            };
            let fields: Vec<(String, String)> = match &pair[1] {
                Value::Array(flat) => flat
                    .chunks(2)
                    .map(|kv| (text(&kv[0]), text(&kv[1])))
                    .collect(),
                Value::Map(m) => m.iter().map(|(k, v)| (text(k), text(v))).collect(),
                other => panic!("fields {other:?}"),
            };
            fields
                .iter()
                .find(|(k, _)| k == "v")
                .and_then(|(_, v)| v.parse().ok())
                .expect("a version field")
        })
        .collect()
}

/// PostgreSQL's side alone: a batch carrying a superseded epoch rolls back
/// whole; the current epoch commits, and a replay of it changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_refuses_a_batch_with_a_superseded_epoch() {
    let dir = tempfile::tempdir().expect("dir");
    let s = settings(&test_redis_url(), &test_admin_database_url(), dir.path()).await;
    let p = connect(&s).await;
    let stream = "t:{p0}:events";
    let take = || async {
        let taken = pg::take_fences(&p.pg, &[stream.to_owned()]).await;
        taken.expect("take")[0].1
    };
    let old = take().await;
    let new = take().await;
    assert!(new > old);
    let events = [LikeEvent {
        post: 1,
        user: 2,
        liked: true,
        version: 10,
        at_ms: 0,
    }];
    let fence = |epoch| {
        vec![Fence {
            stream: stream.to_owned(),
            epoch,
        }]
    };
    let refused = pg::apply_events(&p.pg, &events, &fence(old))
        .await
        .expect("apply");
    assert_eq!(
        refused,
        Applied::Fenced {
            streams: vec![stream.to_owned()]
        }
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM likes")
        .fetch_one(&p.pg)
        .await
        .expect("count");
    assert_eq!(rows, 0, "a refused batch writes nothing");
    let applied = pg::apply_events(&p.pg, &events, &fence(new))
        .await
        .expect("apply");
    assert_eq!(applied, Applied::Committed { changed: 1 });
    let replayed = pg::apply_events(&p.pg, &events, &fence(new))
        .await
        .expect("apply");
    assert_eq!(replayed, Applied::Committed { changed: 0 });
    // An unknown stream (no takeover registered) is refused too.
    let unknown = vec![Fence {
        stream: "t:{p1}:events".into(),
        epoch: 1,
    }];
    assert!(matches!(
        pg::apply_events(&p.pg, &events, &unknown).await,
        Ok(Applied::Fenced { .. })
    ));
}
