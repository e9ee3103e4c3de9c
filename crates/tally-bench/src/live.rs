//! Live subscribers during a run (`--subscribers N`): WebSocket clients on
//! the hottest posts count the pushes they get, and a probe measures
//! like-to-push latency: it likes and unlikes a post of its own (quiet, so
//! each push leaves at once) and times the push that carries the new count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tally_client::{Api, LikeVerb, LiveSocket, Next, PostId};
use tokio_util::task::AbortOnDropHandle;

#[derive(Debug, Serialize)]
pub struct LiveSummary {
    pub subscribers_connected: u64,
    pub pushes_received: u64,
    pub pushes_per_sec: f64,
    pub like_to_push_samples: u64,
    pub like_to_push_p50_ms: f64,
    pub like_to_push_p99_ms: f64,
}

pub struct Live {
    connected: Arc<AtomicU64>,
    pushes: Arc<AtomicU64>,
    latency: Arc<Mutex<Histogram<u64>>>,
    /// Aborted with the run, even when the run is dropped midway.
    tasks: Vec<AbortOnDropHandle<()>>,
    started: Instant,
}

async fn subscribe(base: &str, post: PostId) -> Option<LiveSocket> {
    let mut ws = LiveSocket::connect(base).await.ok()?;
    ws.subscribe(&[post]).await.ok()?;
    Some(ws)
}

impl Live {
    /// Connects `n` subscribers over `hot` posts, and the probe on `probe_post`.
    pub async fn start(
        api: &Api,
        n: usize,
        hot: &[PostId],
        probe_token: &str,
        probe_post: PostId,
    ) -> Self {
        let base = api.base();
        let connected = Arc::new(AtomicU64::new(0));
        let pushes = Arc::new(AtomicU64::new(0));
        let latency = Arc::new(Mutex::new(
            Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!()),
        ));
        let mut tasks = Vec::new();
        for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
            let opened = futures::future::join_all(
                chunk.iter().map(|i| subscribe(base, hot[i % hot.len()])),
            )
            .await;
            for ws in opened.into_iter().flatten() {
                connected.fetch_add(1, Ordering::Relaxed);
                let pushes = pushes.clone();
                tasks.push(AbortOnDropHandle::new(tokio::spawn(async move {
                    let mut ws = ws;
                    loop {
                        match ws.next(Duration::from_secs(3600)).await {
                            Next::Message(_) => {
                                pushes.fetch_add(1, Ordering::Relaxed);
                            }
                            Next::TimedOut => {}
                            Next::Closed => return,
                        }
                    }
                })));
            }
        }
        if let Some(ws) = subscribe(base, probe_post).await {
            tasks.push(AbortOnDropHandle::new(tokio::spawn(probe(
                api.clone(),
                probe_token.to_owned(),
                probe_post,
                ws,
                latency.clone(),
            ))));
        }
        Self {
            connected,
            pushes,
            latency,
            tasks,
            started: Instant::now(),
        }
    }

    pub fn stop(self) -> LiveSummary {
        for t in &self.tasks {
            t.abort();
        }
        let pushes = self.pushes.load(Ordering::Relaxed);
        let (samples, p50, p99) = self
            .latency
            .lock()
            .map(|h| {
                (
                    h.len(),
                    h.value_at_quantile(0.5) as f64 / 1000.0,
                    h.value_at_quantile(0.99) as f64 / 1000.0,
                )
            })
            .unwrap_or_default();
        LiveSummary {
            subscribers_connected: self.connected.load(Ordering::Relaxed),
            pushes_received: pushes,
            pushes_per_sec: pushes as f64 / self.started.elapsed().as_secs_f64().max(0.001),
            like_to_push_samples: samples,
            like_to_push_p50_ms: p50,
            like_to_push_p99_ms: p99,
        }
    }
}

async fn probe(
    api: Api,
    token: String,
    post: PostId,
    mut ws: LiveSocket,
    latency: Arc<Mutex<Histogram<u64>>>,
) {
    let mut liked = false;
    loop {
        // Quiet between probes (longer than the coalescing interval), so
        // each push leaves on the leading edge.
        tokio::time::sleep(Duration::from_millis(200)).await;
        liked = !liked;
        let sent = Instant::now();
        let verb = if liked {
            LikeVerb::Like
        } else {
            LikeVerb::Unlike
        };
        if api.like(&token, post, verb).await.is_err() {
            continue;
        }
        let left = Duration::from_secs(2).saturating_sub(sent.elapsed());
        if ws.wait_for_count(post, i64::from(liked), left).await
            && let Ok(mut h) = latency.lock()
        {
            let _ = h.record((sent.elapsed().as_micros() as u64).max(1));
        }
    }
}
