//! Real `tally` processes for multi-node and crash tests, and a small load
//! generator with a ledger of every answer, so a test can prove afterwards
//! that nothing acknowledged was lost.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use tally_bench::Pair;
use tally_client::{Api, LikeAnswer, LikeVerb};
use tally_server::config::Settings;

use crate::helpers::png;

pub const BIN: &str = env!("CARGO_BIN_EXE_tally");

/// Flags that point a `tally` command at the settings' backend.
pub fn backend_args(settings: &Settings) -> Vec<String> {
    let mut args = Vec::new();
    if let (Some(redis), Some(db)) = (&settings.redis_url, &settings.database_url) {
        args.extend([
            "--redis-url".into(),
            redis.clone(),
            "--database-url".into(),
            db.clone(),
            "--key-prefix".into(),
            settings.production.key_prefix.clone(),
        ]);
    }
    args
}

/// Environment shared by every node of a test.
pub(crate) fn node_env(cmd: &mut Command, settings: &Settings) {
    cmd.env("TALLY_RATE_LIMITS__USER_WRITES_PER_SEC", "0")
        .env("TALLY_RATE_LIMITS__AUTH_PER_MIN_PER_IP", "0")
        .env(
            "TALLY_PARTITIONS",
            settings.production.partitions.to_string(),
        )
        .env(
            "TALLY_SYNC__LEASE_TTL_MS",
            settings.production.sync.lease_ttl_ms.to_string(),
        )
        .env(
            "TALLY_SYNC__MAX_DELAY_MS",
            settings.production.sync.max_delay_ms.to_string(),
        )
        .env(
            "TALLY_REDIS_TIMEOUT_MS",
            settings.production.redis_timeout_ms.to_string(),
        )
        .env("TALLY_RECONCILE_INTERVAL_SECS", "0")
        // No load balancer watches these nodes unless a test says so
        // (`Node::start_with`): SIGTERM stops them at once.
        .env("TALLY_DRAIN_GRACE_MS", "0")
        .env("RUST_LOG", "warn");
}

/// A `tally serve` process.
pub struct Node {
    child: Child,
    pub base: String,
}

impl Node {
    pub fn start(settings: &Settings, data_dir: &Path) -> Self {
        Self::start_with(settings, data_dir, &[])
    }

    /// Starts a node with extra environment (settings as `TALLY_*`), which
    /// wins over the tests' defaults.
    pub fn start_with(settings: &Settings, data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(backend_args(settings))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        node_env(&mut cmd, settings);
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().expect("spawn tally serve");
        let stdout = child.stdout.take().expect("stdout");
        // Read on a thread, so that a node that never starts fails the test
        // after a minute instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = (child.kill(), child.wait());
            panic!("tally serve printed nothing within 60 s");
        };
        let base = line
            .trim()
            .strip_prefix("tally listening on ")
            .unwrap_or_else(|| panic!("tally serve did not start: {line:?}"))
            .to_owned();
        Self { child, base }
    }

    /// The process id, for reading its `/proc` entries.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host:port`, as a load balancer names the node.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// SIGTERM: the node drains (see `drain_grace_ms`) and exits by itself.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {}", self.child.id());
    }

    /// Waits for the process to exit (fails after `secs`).
    pub async fn exited(&mut self, secs: u64) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the node did not exit within {secs} s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no drain, no goodbye.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seeds users with `tally users seed`; returns (id, token) pairs.
pub fn seed(settings: &Settings, data_dir: &Path, count: u64) -> Vec<(i64, String)> {
    let tokens = data_dir.join(format!("tokens-{count}.txt"));
    let mut cmd = Command::new(BIN);
    cmd.args(["users", "seed", "--count", &count.to_string(), "--data-dir"])
        .arg(data_dir)
        .arg("--tokens-out")
        .arg(&tokens)
        .args(backend_args(settings));
    node_env(&mut cmd, settings);
    assert!(cmd.status().expect("run tally users seed").success());
    tally_store::accounts::read_tokens(&tokens).expect("tokens file")
}

pub async fn create_post(client: &Client, base: &str, token: &str) -> i64 {
    let r = Api::with_client(client.clone(), base)
        .upload_request(Some(token), png(8, 8), "p.png", "load")
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<serde_json::Value>().await.expect("json")["id"]
        .as_i64()
        .expect("id")
}

/// What the load saw, per (user, post): the load generator's ledger.
pub type Ledger = HashMap<(i64, i64), Pair>;

/// Random likes and unlikes from every user on the posts, spread over the
/// nodes' URLs, until `stop` is set. A user stops at its first failed
/// request (its outcome is then unknown and recorded as in flight) unless
/// `keep_going`, in which case failures are retried on the next node.
pub struct Load {
    pub ledger: Arc<tally_bench::Ledger>,
    pub answered: Arc<AtomicU64>,
    pub stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(
        client: &Client,
        bases: Vec<String>,
        users: &[(i64, String)],
        posts: &[i64],
        keep_going: bool,
    ) -> Self {
        let ledger: Arc<tally_bench::Ledger> = Arc::default();
        let answered = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (i, (user, token)) in users.iter().cloned().enumerate() {
            let (client, bases, posts) = (client.clone(), bases.clone(), posts.to_vec());
            let (ledger, answered, stop) = (ledger.clone(), answered.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut node = i;
                while !stop.load(Ordering::Relaxed) {
                    let post = posts[rand::random_range(0..posts.len())];
                    let like = rand::random_bool(0.6);
                    let verb = if like {
                        LikeVerb::Like
                    } else {
                        LikeVerb::Unlike
                    };
                    let api = Api::with_client(client.clone(), &bases[node % bases.len()]);
                    let body = match api.like_request(&token, post, verb).send().await {
                        // A 200 must carry a like answer.
                        Ok(r) if r.status() == StatusCode::OK => {
                            Some(r.json::<LikeAnswer>().await.expect("a like answer"))
                        }
                        _ => {
                            // May have landed: allowed either way until a
                            // later answer for the pair settles it.
                            ledger.unknown(user, post, verb);
                            None
                        }
                    };
                    match body {
                        Some(answer) => {
                            assert_eq!(answer.liked, like);
                            ledger.answered(user, post, like);
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            if !keep_going {
                                return;
                            }
                            // The outcome is unknown: it stays in flight (a
                            // later answer for the pair settles it); carry on
                            // through the next node.
                            node += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }));
        }
        Self {
            ledger,
            answered,
            stop,
            tasks,
        }
    }

    /// Waits until `n` more answers arrived (fails after two minutes).
    pub async fn wait_answers(&self, n: u64) {
        let target = self.answered.load(Ordering::Relaxed) + n;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while self.answered.load(Ordering::Relaxed) < target {
            assert!(
                std::time::Instant::now() < deadline,
                "the load got {} of {target} answers in 120 s",
                self.answered.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn finish(self) -> Ledger {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(120), task)
                .await
                .expect("the load stops within 120 s")
                .expect("load task");
        }
        self.ledger.snapshot()
    }
}
