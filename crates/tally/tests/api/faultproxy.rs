//! A fault-injecting TCP proxy for the fault suite (`faults.rs`).
//!
//! This kernel has no netem, and stopping a shared service would disturb
//! every other test, so a node under test reaches its Redis or PostgreSQL
//! through one of these instead: a tokio proxy on a free loopback port that
//! forwards to the real server and can, at run time,
//!
//! - add latency to every chunk, each way (a delay line: the throughput is
//!   unchanged, each byte just arrives later),
//! - stall: hold every byte (both ways, connections stay open) until released,
//! - drop every open connection with a reset (RST, as a crashed peer or a
//!   middlebox does),
//! - refuse new connections (accepted and reset at once).
//!
//! Only the connections through the proxy suffer: the test itself talks to
//! the servers directly to check the outcome.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// The knobs, shared by the accept loop and every connection.
struct Knobs {
    upstream: String,
    latency_ms: AtomicU64,
    refusing: AtomicBool,
    /// True while forwarding is stopped.
    stalled: watch::Sender<bool>,
    /// Bumped by [`FaultProxy::drop_all`]: every connection older than the
    /// new value resets.
    generation: watch::Sender<u64>,
    /// Connections accepted and forwarded so far.
    connections: AtomicU64,
}

/// A proxy on `127.0.0.1:port` to `upstream`, stopped on drop (its
/// connections reset).
pub struct FaultProxy {
    port: u16,
    knobs: Arc<Knobs>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`
    /// (`host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let knobs = Arc::new(Knobs {
            upstream: upstream.to_owned(),
            latency_ms: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
            stalled: watch::Sender::new(false),
            generation: watch::Sender::new(0),
            connections: AtomicU64::new(0),
        });
        let shared = knobs.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if shared.refusing.load(Ordering::Relaxed) {
                    reset(client);
                    continue;
                }
                shared.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(forward(client, shared.clone()));
            }
        });
        Self {
            port,
            knobs,
            accept,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Latency added to every chunk, each way (zero: none).
    pub fn set_latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.knobs.latency_ms.store(ms, Ordering::Relaxed);
    }

    /// Stops (true) or resumes (false) forwarding; held bytes are then
    /// delivered in order.
    pub fn stall(&self, stalled: bool) {
        self.knobs.stalled.send_replace(stalled);
    }

    /// Resets every open connection.
    pub fn drop_all(&self) {
        self.knobs.generation.send_modify(|g| *g += 1);
    }

    /// Resets new connections (true) or forwards them again (false).
    pub fn refuse(&self, refusing: bool) {
        self.knobs.refusing.store(refusing, Ordering::Relaxed);
    }

    /// Connections forwarded so far.
    pub fn connections(&self) -> u64 {
        self.knobs.connections.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.knobs.stalled.send_replace(false);
        self.drop_all();
    }
}

/// Closes with RST rather than FIN (SO_LINGER 0).
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Forwards one connection both ways until either side closes, or resets
/// both sides when [`FaultProxy::drop_all`] is called.
async fn forward(mut client: TcpStream, knobs: Arc<Knobs>) {
    let mut generation = knobs.generation.subscribe();
    generation.borrow_and_update();
    let Ok(mut upstream) = TcpStream::connect(&knobs.upstream).await else {
        reset(client);
        return;
    };
    let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
    let dropped = {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        let both = async {
            let _ = tokio::try_join!(
                pipe(client_read, upstream_write, &knobs),
                pipe(upstream_read, client_write, &knobs)
            );
        };
        tokio::select! {
            () = both => false,
            _ = generation.changed() => true,
        }
    };
    if dropped {
        reset(client);
        reset(upstream);
    }
}

/// One direction: a reader that stamps each chunk with when it may leave
/// (now + latency), and a writer that waits for that time and for the end
/// of a stall.
async fn pipe<R, W>(mut from: R, mut to: W, knobs: &Knobs) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            let latency = Duration::from_millis(knobs.latency_ms.load(Ordering::Relaxed));
            if tx
                .send((Instant::now() + latency, buf[..n].to_vec()))
                .is_err()
            {
                return Ok(());
            }
        }
    };
    let write = async {
        let mut stalled = knobs.stalled.subscribe();
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            // Only fails when the proxy is gone, and then so is this.
            let _ = stalled.wait_for(|s| !*s).await;
            to.write_all(&chunk).await?;
        }
        to.shutdown().await
    };
    // An error either way ends both: the connection is broken.
    tokio::try_join!(read, write).map(|_| ())
}

/// Writes `ping`, reads four bytes back.
async fn round_trip(conn: &mut TcpStream, buf: &mut [u8; 4]) -> std::io::Result<()> {
    conn.write_all(b"ping").await?;
    conn.read_exact(buf).await.map(|_| ())
}

/// The knobs do what they say, against an echo server: latency delays a
/// reply by at least the latency each way, a stall holds it until release,
/// a drop resets open connections, a refusal resets new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_knobs_do_what_they_say() {
    let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let upstream = echo.local_addr().expect("echo address").to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let proxy = FaultProxy::start(&upstream).await;
    let mut conn = TcpStream::connect(proxy.addr()).await.expect("connect");
    let mut buf = [0u8; 4];
    round_trip(&mut conn, &mut buf).await.expect("plain");
    assert_eq!(&buf, b"ping");

    proxy.set_latency(Duration::from_millis(50));
    let started = Instant::now();
    round_trip(&mut conn, &mut buf).await.expect("with latency");
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "50 ms each way"
    );
    proxy.set_latency(Duration::ZERO);

    proxy.stall(true);
    let held = tokio::time::timeout(Duration::from_millis(300), round_trip(&mut conn, &mut buf));
    assert!(held.await.is_err(), "nothing passes a stall");
    proxy.stall(false);
    tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut buf))
        .await
        .expect("released")
        .expect("the held bytes");
    assert_eq!(&buf, b"ping");

    proxy.drop_all();
    let dropped = tokio::time::timeout(Duration::from_secs(10), round_trip(&mut conn, &mut buf));
    assert!(dropped.await.expect("answered").is_err(), "reset");

    proxy.refuse(true);
    // The reset may come before connect() returns, or at the first read.
    let refused = async {
        let mut conn = TcpStream::connect(proxy.addr()).await?;
        round_trip(&mut conn, &mut buf).await
    };
    let refused = tokio::time::timeout(Duration::from_secs(10), refused);
    assert!(refused.await.expect("answered").is_err(), "reset at once");
    proxy.refuse(false);
    let mut again = TcpStream::connect(proxy.addr()).await.expect("connect");
    round_trip(&mut again, &mut buf)
        .await
        .expect("forwarded again");
    assert_eq!(proxy.connections(), 2, "the refused one was not forwarded");
}
