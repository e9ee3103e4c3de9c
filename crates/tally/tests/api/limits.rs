//! Limits a reverse proxy would otherwise give (issue 12, defects 1, 2, 5
//! and 6): connection timeouts and caps, live caps and message limits,
//! prompt release of closed sockets, and the headers of `/media` and
//! `/docs`. Each test runs the limit small (a timeout of a second, a cap of
//! two) against a real node on loopback, over raw TCP where the defect
//! lives below HTTP clients.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tally_client::{LiveSocket, Next};
use tally_server::config::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Backend, TestApp};

/// A node on the embedded backend (these limits do not depend on the
/// backend) with `configure` applied.
async fn app(configure: impl FnOnce(&mut Settings)) -> TestApp {
    TestApp::spawn_with(Backend::Embedded, configure).await
}

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (EOF or reset), failing
/// after `within`. Returns what was read.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("the server kept the connection open for {within:?}"),
            Ok(Ok(0) | Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Status and JSON body of a raw HTTP/1.1 answer.
fn parse_answer(raw: &[u8]) -> (u16, String, Value) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let body = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, head.to_lowercase(), body)
}

const GET_HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_socket_is_closed() {
    let app = app(|s| s.connections.idle_socket_timeout_ms = 1000).await;
    let started = Instant::now();
    let mut idle = TcpStream::connect(addr(&app)).await.unwrap();
    let got = read_until_closed(&mut idle, Duration::from_secs(20)).await;
    assert!(got.is_empty(), "nothing is answered to nothing");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_line_dripped_byte_by_byte_is_closed() {
    let app = app(|s| {
        s.connections.idle_socket_timeout_ms = 60_000;
        s.connections.header_read_timeout_ms = 1500;
    })
    .await;
    let mut conn = TcpStream::connect(addr(&app)).await.unwrap();
    let started = Instant::now();
    // One byte every 250 ms: each byte is activity, the head never ends.
    for b in "GET /healthz?padding=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1".bytes() {
        if conn.write_all(&[b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        if started.elapsed() > Duration::from_secs(20) {
            panic!("the server still reads a request line dripped for 20 s");
        }
    }
    let got = read_until_closed(&mut conn, Duration::from_secs(20)).await;
    assert!(got.is_empty(), "no answer to an unfinished head");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "closed after the header timeout, not after the whole line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn headers_dripped_slowly_are_closed() {
    let app = app(|s| s.connections.header_read_timeout_ms = 1500).await;
    let mut conn = TcpStream::connect(addr(&app)).await.unwrap();
    let started = Instant::now();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let mut closed = false;
    for i in 0..80 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if conn
            .write_all(format!("X-Drip-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
    }
    if !closed {
        read_until_closed(&mut conn, Duration::from_secs(5)).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the headers were read for {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = app(|s| s.connections.keep_alive_timeout_ms = 1000).await;
    let mut conn = TcpStream::connect(addr(&app)).await.unwrap();
    conn.write_all(GET_HEALTHZ.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), conn.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Kept alive, then closed once idle for the keep-alive timeout.
    let started = Instant::now();
    let rest = read_until_closed(&mut conn, Duration::from_secs(20)).await;
    assert!(rest.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(800));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_cap_connections_get_a_json_answer() {
    let app = app(|s| {
        s.connections.max_total = 3;
        s.connections.idle_socket_timeout_ms = 60_000;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr(&app)).await.unwrap());
    }
    // Accepted in order: give the node a moment to count the three.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = TcpStream::connect(addr(&app)).await.unwrap();
    extra.write_all(GET_HEALTHZ.as_bytes()).await.unwrap();
    let raw = read_until_closed(&mut extra, Duration::from_secs(20)).await;
    let (status, head, body) = parse_answer(&raw);
    assert_eq!(status, 503, "{head}");
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");

    // A freed place is taken again.
    held.pop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = TcpStream::connect(addr(&app)).await.unwrap();
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let raw = read_until_closed(&mut again, Duration::from_secs(20)).await;
    assert_eq!(parse_answer(&raw).0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_address_over_its_cap_gets_429() {
    let app = app(|s| {
        s.connections.max_per_ip = 2;
        s.connections.exempt_loopback = false;
        s.connections.idle_socket_timeout_ms = 60_000;
    })
    .await;
    let _a = TcpStream::connect(addr(&app)).await.unwrap();
    let _b = TcpStream::connect(addr(&app)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = TcpStream::connect(addr(&app)).await.unwrap();
    extra.write_all(GET_HEALTHZ.as_bytes()).await.unwrap();
    let raw = read_until_closed(&mut extra, Duration::from_secs(20)).await;
    let (status, head, body) = parse_answer(&raw);
    assert_eq!(status, 429, "{head}");
    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
}

/// A raw Socket.io (Engine.IO v4) client over WebSocket: enough of the
/// protocol to connect, emit and read events, answering pings.
struct SocketIo {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
}

/// What a Socket.io connect ended in.
enum Connected {
    Yes(Box<SocketIo>),
    Refused(Value),
}

impl SocketIo {
    async fn connect(app: &TestApp) -> Connected {
        let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", addr(app));
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        let open = Self::text(&mut ws).await;
        assert!(open.starts_with('0'), "Engine.IO open: {open}");
        ws.send(Message::Text("40".into())).await.unwrap();
        let mut reply = Self::text(&mut ws).await;
        while reply == "2" {
            ws.send(Message::Text("3".into())).await.unwrap();
            reply = Self::text(&mut ws).await;
        }
        if let Some(err) = reply.strip_prefix("44") {
            return Connected::Refused(serde_json::from_str(err).unwrap());
        }
        assert!(reply.starts_with("40"), "Socket.io connect: {reply}");
        Connected::Yes(Box::new(Self { ws }))
    }

    async fn connected(app: &TestApp) -> Self {
        match Self::connect(app).await {
            Connected::Yes(s) => *s,
            Connected::Refused(why) => panic!("connect refused: {why}"),
        }
    }

    async fn text(
        ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    ) -> String {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
                .await
                .expect("a message within 20 s")
                .expect("open")
                .expect("readable");
            if let Message::Text(t) = msg {
                return t.to_string();
            }
        }
    }

    async fn emit(&mut self, event: &str, data: &Value) -> bool {
        let frame = format!("42{}", json!([event, data]));
        self.ws.send(Message::Text(frame.into())).await.is_ok()
    }

    async fn emit_raw(&mut self, packet: &str) {
        self.ws
            .send(Message::Text(packet.to_owned().into()))
            .await
            .unwrap();
    }

    /// The next event within `wait`: `Some((name, data))`, `None` on
    /// silence; a closed connection is `Err`.
    async fn next_event(&mut self, wait: Duration) -> Result<Option<(String, Value)>, ()> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return Err(()),
                Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
                Ok(Some(Ok(_))) => continue,
            };
            if msg == "2" {
                let _ = self.ws.send(Message::Text("3".into())).await;
                continue;
            }
            if msg.starts_with('1') {
                return Err(());
            }
            if let Some(payload) = msg.strip_prefix("42")
                && let Ok(Value::Array(parts)) = serde_json::from_str::<Value>(payload)
            {
                let name = parts[0].as_str().unwrap_or_default().to_owned();
                return Ok(Some((name, parts.get(1).cloned().unwrap_or(Value::Null))));
            }
        }
    }

    /// Waits for the event `name`, skipping others.
    async fn expect_event(&mut self, name: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match self.next_event(Duration::from_secs(20)).await {
                Ok(Some((n, data))) if n == name => return data,
                Ok(_) => {}
                Err(()) => panic!("closed while waiting for {name}"),
            }
        }
        panic!("no {name} event in 20 s");
    }

    /// Waits for the server to close the connection.
    async fn expect_closed(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "still open after {within:?}");
            if self.next_event(left).await.is_err() {
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_connections_are_capped_per_address_on_both_transports() {
    let app = app(|s| {
        s.connections.exempt_loopback = false;
        s.live_limits.max_per_ip = 2;
    })
    .await;
    let ws = LiveSocket::connect(&app.base).await.expect("first");
    let sio = SocketIo::connected(&app).await;
    let third = LiveSocket::connect(&app.base).await;
    let err = third
        .err()
        .expect("a third WebSocket is refused")
        .to_string();
    assert!(err.contains("429"), "{err}");
    match SocketIo::connect(&app).await {
        Connected::Refused(why) => assert_eq!(why["message"], "too_many_connections"),
        Connected::Yes(_) => panic!("a third Socket.io connection was accepted"),
    }
    // Leaving frees a place, on either transport.
    drop(ws);
    drop(sio);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if LiveSocket::connect(&app.base).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "places were not given back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversize_socketio_message_closes_the_connection() {
    let app = app(|_| {}).await;
    let users = app.seed_users(1).await;
    let post = app.post(&users[0]).await;

    // 100 KB of ids, over the 64 KiB limit: refused before it is parsed.
    let mut big = SocketIo::connected(&app).await;
    let ids: Vec<i64> = (0..20_000).map(|i| 1_000_000 + i).collect();
    big.emit("subscribe", &json!(ids)).await;
    big.expect_closed(Duration::from_secs(20)).await;

    // The same connection with a message under the limit works.
    let mut small = SocketIo::connected(&app).await;
    small.emit("subscribe", &json!([post])).await;
    let count = small.expect_event("likeCount").await;
    assert_eq!(
        (&count["postId"], &count["likeCount"]),
        (&json!(post), &json!(0))
    );
    assert!(count["version"].is_i64(), "{count}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_socketio_subscribe_gets_invalid_request() {
    let app = app(|_| {}).await;
    let users = app.seed_users(1).await;
    let post = app.post(&users[0]).await;
    let mut sio = SocketIo::connected(&app).await;
    for bad in [
        r#"42["subscribe","nope"]"#,
        r#"42["subscribe",{"postIds":"x"}]"#,
        r#"42["subscribe"]"#,
        r#"42["unsubscribe",[true]]"#,
    ] {
        sio.emit_raw(bad).await;
        let err = sio.expect_event("error").await;
        assert_eq!(err["code"], "invalid_request", "{bad}: {err}");
    }
    // Still usable.
    sio.emit("subscribe", &json!({"postIds": [post]})).await;
    assert_eq!(sio.expect_event("likeCount").await["postId"], post);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribing_is_limited_in_posts_and_rate() {
    let app = app(|s| {
        s.live_limits.max_watched = 4;
        s.live_limits.subscribe_posts_per_sec = 1;
        s.live_limits.subscribe_burst = 3;
    })
    .await;
    let mut ws = LiveSocket::connect(&app.base).await.unwrap();
    ws.subscribe(&[1, 2, 3, 4, 5]).await.unwrap();
    let err = next_error(&mut ws).await;
    assert_eq!(err["code"], "too_many_subscriptions", "{err}");
    ws.subscribe(&[1, 2, 3]).await.unwrap();
    ws.subscribe(&[4]).await.unwrap();
    let err = next_error(&mut ws).await;
    assert_eq!(err["code"], "rate_limited", "{err}");

    let mut sio = SocketIo::connected(&app).await;
    sio.emit("subscribe", &json!([1, 2, 3])).await;
    sio.emit("subscribe", &json!([4])).await;
    assert_eq!(sio.expect_event("error").await["code"], "rate_limited");
}

async fn next_error(ws: &mut LiveSocket) -> Value {
    loop {
        match ws.next(Duration::from_secs(20)).await {
            Next::Message(m) if m["type"] == "error" => return m,
            Next::Message(_) => {}
            other => panic!("no error message: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_websocket_client_is_closed_after_the_pong_deadline() {
    let app = app(|s| {
        s.live_limits.ping_interval_ms = 500;
        s.live_limits.ping_timeout_ms = 500;
    })
    .await;
    let url = format!("ws://{}/v1/live", addr(&app));
    // This client reads (and so answers pings): it stays.
    let mut alive = LiveSocket::connect(&app.base).await.unwrap();
    let (mut silent, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    // The silent one reads nothing, so it never answers a ping.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        assert_eq!(alive.next(Duration::from_millis(200)).await, Next::TimedOut);
    }
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut pings = 0;
        loop {
            match silent.next().await {
                Some(Ok(Message::Ping(_))) => pings += 1,
                Some(Ok(Message::Close(_)) | Err(_)) | None => return pings,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("the silent client is closed");
    assert!(closed >= 1, "the server pinged before closing");
    alive.subscribe(&[1]).await.unwrap();
    assert!(
        alive.next(Duration::from_secs(5)).await != Next::Closed,
        "the answering client is still open"
    );
}

/// Server-side sockets of `port` in CLOSE_WAIT (the peer left, the
/// server has not closed), from /proc/net/tcp{,6}.
fn close_wait(port: u16) -> usize {
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.len() > 3 && cols[1].ends_with(&port) && cols[3] == "08"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sockets_of_clients_that_left_are_released_promptly() {
    let app = app(|_| {}).await;
    let users = app.seed_users(1).await;
    let post = app.post(&users[0]).await;
    let port: u16 = addr(&app).rsplit(':').next().unwrap().parse().unwrap();
    let mut sockets = Vec::new();
    let mut sios = Vec::new();
    for _ in 0..20 {
        let mut ws = LiveSocket::connect(&app.base).await.unwrap();
        ws.subscribe(&[post]).await.unwrap();
        assert!(ws.wait_for_count(post, 0, Duration::from_secs(20)).await);
        sockets.push(ws);
        let mut sio = SocketIo::connected(&app).await;
        sio.emit("subscribe", &json!([post])).await;
        sio.expect_event("likeCount").await;
        sios.push(sio);
    }
    // Long-polling clients too (Engine.IO's handshake, then a poll that
    // waits).
    let mut polls = Vec::new();
    for _ in 0..10 {
        let mut conn = TcpStream::connect(addr(&app)).await.unwrap();
        conn.write_all(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = conn.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        let sid = text
            .split("\"sid\":\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("a sid")
            .to_owned();
        conn.write_all(
            format!(
                "GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: t\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        polls.push(conn);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Everyone leaves without a goodbye (TCP FIN only).
    drop(sockets);
    drop(sios);
    drop(polls);
    let left = Instant::now();
    let mut waiting;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waiting = close_wait(port);
        if waiting == 0 || left.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    assert_eq!(
        waiting,
        0,
        "sockets still in CLOSE_WAIT {:?} after the clients left",
        left.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn media_misses_are_json_and_uncached_and_every_answer_has_a_referrer_policy() {
    let app = app(|_| {}).await;
    for path in [
        "/media/0123456789abcdef0123456789abcdef.jpg",
        "/media/",
        "/media/.hidden.tmp",
        "/media/a/b",
    ] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}: no redirect, no listing");
        assert!(
            !r.headers()
                .get("cache-control")
                .is_some_and(|v| v.to_str().unwrap().contains("immutable")),
            "{path}: a miss is not cached for ever"
        );
        let body: Value = r.json().await.expect("a JSON body");
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    // Dot segments, raw (an HTTP client would normalise them away).
    for path in ["/media/.", "/media/..", "/media/%2e", "/media/.%2e"] {
        let mut conn = TcpStream::connect(addr(&app)).await.unwrap();
        conn.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let raw = read_until_closed(&mut conn, Duration::from_secs(20)).await;
        let (status, head, body) = parse_answer(&raw);
        assert_eq!(status, 404, "{path}: {head}");
        assert!(!head.contains("location:"), "{path}: {head}");
        assert!(!head.contains("immutable"), "{path}: {head}");
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }

    for path in ["/healthz", "/", "/media/x.jpg", "/docs/", "/openapi.json"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(
            r.headers()
                .get("referrer-policy")
                .map(|v| v.to_str().unwrap()),
            Some("no-referrer"),
            "{path}"
        );
    }
    let docs = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    let csp = docs.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let page = docs.text().await.unwrap();
    assert!(
        !page.contains("<script>") && page.contains("<script src="),
        "the docs page's scripts are files, which the policy allows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_that_leave_during_costly_subscribes_are_released_promptly() {
    // Redis + PostgreSQL, where a 500-post snapshot costs real work, and
    // no subscribe budget: the node must notice the close while it reads
    // snapshots, not after all of them.
    let app = TestApp::spawn_with(Backend::RedisPg, |s| {
        s.live_limits.subscribe_posts_per_sec = 0;
    })
    .await;
    let port: u16 = addr(&app).rsplit(':').next().unwrap().parse().unwrap();
    // 100,000 posts, straight into PostgreSQL (uploads would take minutes):
    // every subscribe below loads 500 posts nobody watched yet.
    let users = app.seed_users(1).await;
    let posts: Vec<i64> = {
        use sqlx::Connection;
        let url = app.settings.database_url.as_deref().unwrap();
        let mut pg = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar(
            "INSERT INTO posts (author_id, caption, image_file, thumb_file, width, height, created_at) \
             SELECT $1, 'p', 'x.jpg', 'x_t.jpg', 1, 1, 0 FROM generate_series(1, 100000) RETURNING id",
        )
        .bind(users[0].id)
        .fetch_all(&mut pg)
        .await
        .unwrap()
    };
    let mut clients = Vec::new();
    for chunk in posts.chunks(10_000) {
        let mut ws = LiveSocket::connect(&app.base).await.unwrap();
        for ids in chunk.chunks(500) {
            ws.subscribe(ids).await.unwrap();
            ws.unsubscribe(ids).await.unwrap();
        }
        clients.push(ws);
    }
    drop(clients);
    let left = Instant::now();
    let mut waiting;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waiting = close_wait(port);
        if waiting == 0 || left.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    assert_eq!(
        waiting,
        0,
        "sockets still in CLOSE_WAIT {:?} after the clients left",
        left.elapsed()
    );
}
