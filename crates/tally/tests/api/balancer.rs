//! Several `tally serve` processes behind a real HAProxy, configured by
//! `deploy/render-haproxy.sh` from `deploy/haproxy.cfg.in` (what
//! `deploy/topology.sh` deploys), on the Redis Cluster backend: the counts
//! stay exact through the balancer, live pushes cross nodes, and a node added
//! (soft reload) or drained (SIGTERM) under load loses nothing.
//!
//! HAProxy must be on PATH (`scripts/test` installs it); these tests fail,
//! never skip, without it.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::Value;
use tally_client::{Api, LikeVerb, LiveSocket};
use tally_server::config::Settings;

use crate::helpers::{test_admin_database_url, test_cluster_url};
use crate::nodes::{Load, Node, create_post, seed};
use crate::production::{assert_exact, load_failures, settings};

const RENDER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/render-haproxy.sh"
);

/// An HAProxy of this test's own: a free port, its own config files, its
/// processes killed on drop.
struct Haproxy {
    /// Every process started, the current one last: after a soft reload
    /// the old one finishes its sessions and exits by itself.
    procs: Vec<Child>,
    /// The balancer's URL.
    base: String,
    listen: String,
    dir: PathBuf,
    /// Rendered configs so far (each reload writes a new file).
    configs: usize,
}

impl Haproxy {
    fn start(dir: &Path, nodes: &[&str]) -> Self {
        match Command::new("haproxy").arg("-v").output() {
            Ok(out) if out.status.success() => {}
            other => panic!(
                "haproxy is required on PATH for the balancer tests \
                 (./scripts/test installs it; apt-get install haproxy): {other:?}"
            ),
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut haproxy = Self {
            procs: Vec::new(),
            base: format!("http://127.0.0.1:{port}"),
            listen: format!("127.0.0.1:{port}"),
            dir: dir.to_path_buf(),
            configs: 0,
        };
        haproxy.spawn(nodes);
        haproxy
    }

    /// Renders the config for `nodes` and starts HAProxy on it; with a
    /// process already running, as a soft reload (`-sf OLD_PID`).
    fn spawn(&mut self, nodes: &[&str]) {
        self.configs += 1;
        let config = self.dir.join(format!("haproxy-{}.cfg", self.configs));
        let out = Command::new(RENDER)
            .arg(&self.listen)
            .args(nodes)
            .output()
            .expect("run deploy/render-haproxy.sh");
        assert!(
            out.status.success(),
            "render-haproxy.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&config, &out.stdout).expect("write haproxy config");
        let check = Command::new("haproxy")
            .args(["-c", "-q", "-f"])
            .arg(&config)
            .status()
            .expect("haproxy -c");
        assert!(check.success(), "haproxy rejects {}", config.display());
        let log = self.log_file();
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db").arg("-f").arg(&config);
        if let Some(old) = self.procs.last() {
            cmd.arg("-sf").arg(old.id().to_string());
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn haproxy");
        self.procs.push(child);
    }

    fn log_file(&self) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("haproxy.log"))
            .expect("haproxy log")
    }

    /// Waits until the balancer answers `/readyz` with 200 (a node behind it
    /// is up); fails after 60 s.
    async fn wait_ready(&mut self, client: &Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(current) = self.procs.last_mut()
                && let Some(status) = current.try_wait().expect("try_wait")
            {
                let log = std::fs::read_to_string(self.dir.join("haproxy.log"));
                panic!("haproxy exited with {status}: {log:?}");
            }
            match client.get(format!("{}/readyz", self.base)).send().await {
                Ok(r) if r.status() == StatusCode::OK => return,
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "the balancer was not ready in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(2000)
        .build()
        .expect("client")
}

/// Settings on the cluster backend with a fresh database and key prefix.
async fn cluster_settings(dir: &Path) -> Settings {
    settings(&test_cluster_url(), &test_admin_database_url(), dir).await
}

/// Like requests this node answered, from its `/metrics`.
async fn likes_served(client: &Client, node: &Node) -> f64 {
    let text = client
        .get(format!("{}/metrics", node.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with("http_requests_total{") && l.contains("/like\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Socket.io over long-polling through the balancer: connect, subscribe to
/// `post`, and return the first `likeCount` pushed for it. Each step is a
/// separate HTTP request that must reach the node holding the session (any
/// other answers 400 `Session ID unknown`); the balancer's SERVERID cookie,
/// set on the handshake, pins them there.
async fn socketio_polling_count(client: &Client, base: &str, post: i64) -> i64 {
    use reqwest::header::{COOKIE, SET_COOKIE};
    let url = format!("{base}/socket.io/?EIO=4&transport=polling");
    let r = client.get(&url).send().await.expect("handshake");
    assert_eq!(r.status(), StatusCode::OK, "handshake");
    let cookie = r
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
        .expect("the balancer sets its stickiness cookie");
    assert!(cookie.starts_with("SERVERID="), "{cookie}");
    let open = r.text().await.expect("handshake body");
    let open: Value = serde_json::from_str(open.strip_prefix('0').expect("an open packet"))
        .expect("open packet json");
    let url = format!("{url}&sid={}", open["sid"].as_str().expect("sid"));
    let send = |packet: String| {
        let request = client.post(&url).header(COOKIE, &cookie).body(packet);
        async move {
            let r = request.send().await.expect("post a packet");
            assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
        }
    };
    send("40".into()).await; // connect to the default namespace
    let mut subscribed = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no likeCount over polling");
        let r = client
            .get(&url)
            .header(COOKIE, &cookie)
            .send()
            .await
            .expect("poll");
        assert_eq!(r.status(), StatusCode::OK, "the session was lost");
        let body = r.text().await.expect("poll body");
        for packet in body.split('\u{1e}') {
            if packet == "2" {
                send("3".into()).await; // pong
            } else if packet.starts_with("40") && !subscribed {
                send(format!("42[\"subscribe\",[{post}]]")).await;
                subscribed = true;
            } else if let Some(event) = packet.strip_prefix("42") {
                let event: Value = serde_json::from_str(event).expect("event json");
                if event[0] == "likeCount" && event[1]["postId"] == post {
                    return event[1]["likeCount"].as_i64().expect("likeCount");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_behind_haproxy_count_exactly_and_push_live_across_nodes() {
    let dir = tempfile::tempdir().expect("dir");
    let s = cluster_settings(dir.path()).await;
    let users = seed(&s, dir.path(), 160);
    let nodes: Vec<Node> = (0..3)
        .map(|i| Node::start(&s, &dir.path().join(format!("n{i}"))))
        .collect();
    let addrs: Vec<&str> = nodes.iter().map(Node::addr).collect();
    let mut lb = Haproxy::start(dir.path(), &addrs);
    let client = client();
    lb.wait_ready(&client).await;

    let mut posts = Vec::new();
    for _ in 0..4 {
        posts.push(create_post(&client, &lb.base, &users[0].1).await);
    }
    let watched = posts[0];
    // A subscriber on each node, connected to the node itself, and one more
    // through the balancer (the WebSocket upgrade passes HAProxy).
    let mut sockets = Vec::new();
    for base in nodes.iter().map(|n| &n.base).chain([&lb.base]) {
        let mut ws = LiveSocket::connect(base).await.expect("connect");
        ws.subscribe(&[watched]).await.expect("subscribe");
        assert!(
            ws.wait_for_count(watched, 0, Duration::from_secs(30)).await,
            "snapshot from {base}"
        );
        sockets.push(ws);
    }

    // 150 users liking and unliking through the balancer only.
    let load = Load::start(&client, vec![lb.base.clone()], &users[..150], &posts, true);
    load.wait_answers(3000).await;
    let ledger = load.ledger.clone();
    drop(load.finish().await);
    for node in &nodes {
        assert!(
            likes_served(&client, node).await > 0.0,
            "the balancer sent no likes to {}",
            node.base
        );
    }

    // Every subscriber sees the count the load left...
    let count = |v: Value| v["likeCount"].as_i64().expect("likeCount");
    let mut expected = count(
        Api::with_client(client.clone(), &lb.base)
            .post_request(None, watched)
            .send()
            .await
            .expect("get post")
            .json()
            .await
            .expect("json"),
    );
    for ws in &mut sockets {
        assert!(
            ws.wait_for_count(watched, expected, Duration::from_secs(30))
                .await,
            "final count {expected} not pushed"
        );
    }
    // ...and a like made directly on each node reaches the subscribers of
    // every node (the other two through sharded Pub/Sub).
    for (i, node) in nodes.iter().enumerate() {
        let (user, token) = &users[150 + i];
        let r = Api::with_client(client.clone(), &node.base)
            .like_request(token, watched, LikeVerb::Like)
            .send()
            .await
            .expect("like");
        assert_eq!(r.status(), StatusCode::OK);
        ledger.answered(*user, watched, true);
        expected += 1;
        for (j, ws) in sockets.iter_mut().enumerate() {
            assert!(
                ws.wait_for_count(watched, expected, Duration::from_secs(30))
                    .await,
                "a like on node {i} did not reach subscriber {j} (3: through the balancer; count {expected})"
            );
        }
    }
    // A Socket.io client on the long-polling transport keeps its session
    // through the balancer (the stickiness cookie).
    assert_eq!(
        socketio_polling_count(&client, &lb.base, watched).await,
        expected
    );

    let ledger = ledger.snapshot();
    eprintln!(
        "balancer: {} pairs, {} with an unknown outcome",
        ledger.len(),
        load_failures(&ledger)
    );
    assert_exact(&s, &ledger, &posts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_added_and_a_node_drained_under_load_lose_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let s = cluster_settings(dir.path()).await;
    let users = seed(&s, dir.path(), 150);
    // A grace well above the two failed health checks (~1 s) that take a
    // draining node out of rotation, even on a busy machine.
    let grace = [("TALLY_DRAIN_GRACE_MS", "3000")];
    let start = |i: usize| Node::start_with(&s, &dir.path().join(format!("n{i}")), &grace);
    let mut nodes: Vec<Node> = (0..3).map(start).collect();
    let mut lb = Haproxy::start(
        dir.path(),
        &nodes.iter().map(Node::addr).collect::<Vec<_>>(),
    );
    let client = client();
    lb.wait_ready(&client).await;
    let mut posts = Vec::new();
    for _ in 0..4 {
        posts.push(create_post(&client, &lb.base, &users[0].1).await);
    }

    // Failed requests are retried through the balancer; their outcome stays
    // unknown in the ledger until a later answer settles the pair.
    let load = Load::start(&client, vec![lb.base.clone()], &users, &posts, true);
    load.wait_answers(1500).await;

    // A fourth node joins: re-rendered config, soft reload.
    nodes.push(start(3));
    lb.spawn(&nodes.iter().map(Node::addr).collect::<Vec<_>>());
    lb.wait_ready(&client).await;
    load.wait_answers(1500).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while likes_served(&client, &nodes[3]).await == 0.0 {
        assert!(
            Instant::now() < deadline,
            "the new node got no likes through the balancer in 60 s"
        );
        load.wait_answers(100).await;
    }

    // The first node drains: /readyz turns 503, HAProxy's checks take it
    // out, it serves on for the grace, then stops and exits cleanly.
    let before = load.answered.load(std::sync::atomic::Ordering::Relaxed);
    nodes[0].terminate();
    let status = nodes[0].exited(120).await;
    assert!(status.success(), "the drained node exited with {status}");
    load.wait_answers(1500).await;
    let after = load.answered.load(std::sync::atomic::Ordering::Relaxed);

    let ledger = load.finish().await;
    eprintln!(
        "balancer: {} answers while node 0 drained and stopped; {} pairs, {} with an unknown outcome",
        after - before,
        ledger.len(),
        load_failures(&ledger)
    );
    assert_exact(&s, &ledger, &posts).await;
}

/// SIGTERM: `/readyz` answers 503 `draining` at once while the node still
/// serves (new connections too) for the grace, then it stops by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_turns_readyz_to_draining_while_requests_are_still_served() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Settings::for_tests(dir.path().to_path_buf());
    let users = seed(&s, dir.path(), 2);
    // Long enough that the checks below run inside it on any machine; the
    // test waits it out once.
    let mut node = Node::start_with(&s, dir.path(), &[("TALLY_DRAIN_GRACE_MS", "10000")]);
    let client = client();
    let post = create_post(&client, &node.base, &users[0].1).await;
    let ready = client
        .get(format!("{}/readyz", node.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::OK);

    node.terminate();
    let deadline = Instant::now() + Duration::from_secs(5);
    let body: Value = loop {
        let r = client
            .get(format!("{}/readyz", node.base))
            .send()
            .await
            .expect("readyz answers while draining");
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            break r.json().await.expect("json");
        }
        assert!(Instant::now() < deadline, "/readyz still 200 after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(body["status"], "draining", "{body}");

    // Still serving, on a fresh connection too.
    let fresh = Client::new();
    let r = Api::with_client(fresh, &node.base)
        .like_request(&users[1].1, post, LikeVerb::Like)
        .send()
        .await
        .expect("a like during the grace");
    assert_eq!(r.status(), StatusCode::OK);
    let liked: Value = r.json().await.expect("json");
    assert_eq!(liked["likeCount"], 1);

    let status = node.exited(120).await;
    assert!(status.success(), "exit status {status}");
    // The like answered during the grace is durable (embedded backend:
    // committed before the answer).
    let node = Node::start(&s, dir.path());
    let v: Value = client
        .get(format!("{}/v1/posts/{post}", node.base))
        .send()
        .await
        .expect("get post")
        .json()
        .await
        .expect("json");
    assert_eq!(v["likeCount"], 1);
}
