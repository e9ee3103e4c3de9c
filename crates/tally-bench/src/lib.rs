//! `tally bench`: a load generator for Tally that ends every run by proving
//! the counts exact.
//!
//! Users come from `tally users seed` (tokens minted with the deployment's
//! key); posts are created by the run itself, so their exact final state is
//! known. Post popularity follows a Zipf law, so a few posts are hot. Open
//! loop (`--rate`): requests start on a fixed schedule and latency counts
//! from the *scheduled* start, so a stalled server shows up as latency
//! instead of hiding as fewer requests (no coordinated omission); when the
//! in-flight cap stops a request from starting on time it is counted as
//! missed, and the run says the target rate was not met. Closed loop
//! (`--concurrency` without `--rate`): that many users in a loop.

mod ledger;
mod live;
pub mod ops;
mod report;
mod stats;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use rand_distr::{Distribution, Zipf};

use serde::Serialize;
use tally_client::{Api, ApiError, LikeVerb, PostId, StatusCode, UserId};
use tally_store::production::Production;
use tokio_util::task::AbortOnDropHandle;

pub use ledger::{Ledger, Pair};
pub use ops::{Mix, Op};
pub use stats::{Second, Summary};
pub use verify::{Consistency, prove};

/// Where a run is, for a watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Creating the run's posts and connecting subscribers.
    Preparing,
    Running,
    /// Load is over; waiting for the write-behind, comparing with the ledger.
    Proving,
}

/// Someone watching a run as it goes (the server's load panel; the command
/// line has its progress bar).
pub trait Observer: Send + Sync {
    fn phase(&self, phase: Phase);
    /// Called once per completed second of load.
    fn second(&self, second: Second);
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("http: {0}")]
    Api(#[from] ApiError),
    #[error("setup: {0}")]
    Setup(String),
    #[error("writing the report: {0}")]
    Io(#[from] std::io::Error),
}

/// What to run.
#[derive(Clone, Serialize)]
pub struct BenchConfig {
    pub target: String,
    #[serde(skip)]
    pub users: Vec<(UserId, String)>,
    pub user_count: usize,
    pub posts: usize,
    pub duration: Duration,
    /// Open loop at this many requests per second; `None`: closed loop.
    pub rate: Option<u32>,
    /// Closed loop: workers. Open loop: most requests in flight.
    pub concurrency: usize,
    pub zipf_exponent: f64,
    pub mix: Mix,
    pub timeout: Duration,
    pub out_dir: PathBuf,
    #[serde(skip)]
    pub progress: bool,
    /// Live WebSocket subscribers on the hottest posts (0: none).
    pub subscribers: usize,
    /// The deployment's stores, to check Redis and PostgreSQL directly.
    #[serde(skip)]
    pub production: Option<Production>,
    /// Starts each post's caption, so a run's posts can be told apart.
    pub label: String,
    #[serde(skip)]
    pub observer: Option<Arc<dyn Observer>>,
}

/// Everything a run measured and proved.
#[derive(Serialize)]
pub struct Report {
    pub config: BenchConfig,
    pub seconds: f64,
    pub summary: stats::Summary,
    pub consistency: Consistency,
    pub rate_met: Option<bool>,
    pub live: Option<live::LiveSummary>,
}

struct Shared {
    api: Api,
    cfg: BenchConfig,
    posts: Vec<PostId>,
    zipf: Zipf<f64>,
    /// A user never has two writes in flight: its last answer is its state.
    busy: Vec<AtomicBool>,
    ledger: Ledger,
    stats: stats::Stats,
    started: Instant,
    in_flight: AtomicU64,
}

/// Runs the load, then proves the counts. Writes JSON and HTML reports.
pub async fn run(cfg: BenchConfig) -> Result<Report, BenchError> {
    if cfg.users.is_empty() {
        return Err(BenchError::Setup(
            "no users: seed them with `tally users seed --tokens-out`".into(),
        ));
    }
    let observe = |phase| {
        if let Some(o) = &cfg.observer {
            o.phase(phase);
        }
    };
    observe(Phase::Preparing);
    let api = Api::new(&cfg.target, cfg.timeout, cfg.concurrency.max(16))?;
    let posts = create_posts(&api, &cfg).await?;
    // Subscribers connect before the clock starts: the schedule of the open
    // loop must not count their setup as request latency.
    let live = if cfg.subscribers > 0 {
        // The hottest posts under Zipf are the first ones; the probe gets a
        // post of its own that the load never touches.
        let probe_post = create_posts(
            &api,
            &BenchConfig {
                posts: 1,
                ..cfg.clone()
            },
        )
        .await?[0];
        let hot = &posts[..posts.len().min(10)];
        Some(live::Live::start(&api, cfg.subscribers, hot, &cfg.users[0].1, probe_post).await)
    } else {
        None
    };
    let zipf = Zipf::new(posts.len() as f64, cfg.zipf_exponent)
        .map_err(|e| BenchError::Setup(format!("zipf: {e}")))?;
    let shared = Arc::new(Shared {
        busy: (0..cfg.users.len())
            .map(|_| AtomicBool::new(false))
            .collect(),
        api,
        posts,
        zipf,
        ledger: Ledger::default(),
        stats: stats::Stats::default(),
        started: Instant::now(),
        in_flight: AtomicU64::new(0),
        cfg: cfg.clone(),
    });

    observe(Phase::Running);
    let bar = progress_bar(&cfg);
    // Aborted when the run ends, also when the run itself is dropped (a
    // load run cancelled at shutdown).
    let ticker = AbortOnDropHandle::new(tokio::spawn(tick_progress(shared.clone(), bar.clone())));
    match cfg.rate {
        Some(rate) => open_loop(&shared, rate).await,
        None => closed_loop(&shared).await,
    }
    while shared.in_flight.load(Ordering::Acquire) > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seconds = shared.started.elapsed().as_secs_f64();
    let live = live.map(live::Live::stop);
    ticker.abort();
    bar.finish_and_clear();

    let summary = shared.stats.summary(cfg.duration.as_secs_f64());
    let rate_met = cfg.rate.map(|_| summary.missed == 0);
    observe(Phase::Proving);
    if cfg.progress {
        eprintln!("load done; proving the counts (waits for the write-behind)...");
    }
    let consistency = verify::prove(
        &shared.api,
        &cfg.users,
        &shared.posts,
        &shared.ledger,
        cfg.production.as_ref(),
        Duration::from_secs(120),
    )
    .await?;
    let report = Report {
        config: cfg,
        seconds,
        summary,
        consistency,
        rate_met,
        live,
    };
    report::write(&report)?;
    Ok(report)
}

fn progress_bar(cfg: &BenchConfig) -> ProgressBar {
    if !cfg.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(cfg.duration.as_secs());
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len}s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

async fn tick_progress(shared: Arc<Shared>, bar: ProgressBar) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let second = shared.started.elapsed().as_secs() as usize;
        let last = shared.stats.second(second.saturating_sub(1));
        bar.set_position(second as u64);
        bar.set_message(format!(
            "{} req/s  p99 {:.1} ms  in flight {}",
            last.ops,
            last.p99_ms,
            shared.in_flight.load(Ordering::Relaxed)
        ));
        if let Some(o) = &shared.cfg.observer
            && second <= shared.cfg.duration.as_secs() as usize
        {
            o.second(last);
        }
    }
}

/// Starts requests on a fixed schedule: by time t, `t × rate` requests, and
/// `duration × rate` in all. Each is either sent or counted as missed, even
/// when the generator itself was starved past the end, so answered + errors
/// + missed is always the whole schedule.
async fn open_loop(shared: &Arc<Shared>, rate: u32) {
    let mut sent: u64 = 0;
    let per_request = 1.0 / f64::from(rate.max(1));
    let total = (shared.cfg.duration.as_secs_f64() * f64::from(rate.max(1))).round() as u64;
    while sent < total {
        let now = shared.started.elapsed().as_secs_f64();
        let due = ((now / per_request) as u64).min(total);
        while sent < due {
            let intended = shared.started + Duration::from_secs_f64(sent as f64 * per_request);
            sent += 1;
            if shared.in_flight.load(Ordering::Relaxed) >= shared.cfg.concurrency as u64 {
                shared.stats.missed();
                continue;
            }
            shared.in_flight.fetch_add(1, Ordering::AcqRel);
            let shared = shared.clone();
            tokio::spawn(async move {
                one_request(&shared, intended).await;
                shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            });
        }
        if sent < total {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

async fn closed_loop(shared: &Arc<Shared>) {
    let deadline = shared.started + shared.cfg.duration;
    let workers: Vec<_> = (0..shared.cfg.concurrency)
        .map(|_| {
            let shared = shared.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    shared.in_flight.fetch_add(1, Ordering::AcqRel);
                    one_request(&shared, Instant::now()).await;
                    shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
}

/// Picks a user without a write in flight (writes), or any user (reads).
fn pick_user(shared: &Shared, write: bool) -> Option<usize> {
    let mut rng = rand::rng();
    for _ in 0..32 {
        let i = rng.random_range(0..shared.cfg.users.len());
        if !write || !shared.busy[i].swap(true, Ordering::AcqRel) {
            return Some(i);
        }
    }
    None
}

async fn one_request(shared: &Shared, intended: Instant) {
    let op = shared.cfg.mix.pick(&mut rand::rng());
    let Some(u) = pick_user(shared, op.writes()) else {
        shared.stats.missed();
        return;
    };
    let (user, token) = &shared.cfg.users[u];
    let verb = match op {
        Op::Like => LikeVerb::Like,
        Op::Unlike => LikeVerb::Unlike,
        _ => LikeVerb::Toggle,
    };
    let post = shared.posts
        [(shared.zipf.sample(&mut rand::rng()) as usize).clamp(1, shared.posts.len()) - 1];
    let api = &shared.api;
    let result = match op {
        Op::Like | Op::Unlike | Op::Toggle => api.like(token, post, verb).await.map(Some),
        Op::Feed => api.feed(Some(token), 20, None).await.map(|_| None),
        Op::Likers => api.likers(post, 50, None).await.map(|_| None),
    };
    let second = intended.saturating_duration_since(shared.started).as_secs() as usize;
    match result {
        Ok(answer) => {
            shared.stats.record(op, second, intended.elapsed());
            if let Some(answer) = answer {
                shared.ledger.answered(*user, post, answer.liked);
            }
        }
        // Answered 2xx, but not readably: counted as served, outcome unknown.
        Err(ApiError::Decode { status, .. }) if status.is_success() => {
            shared.stats.record(op, second, intended.elapsed());
            if op.writes() {
                shared.ledger.unknown(*user, post, verb);
            }
        }
        Err(err) => {
            shared.stats.error(op, second, &err.label());
            // A 4xx was refused before any change; a 5xx, a timeout or a
            // broken connection may have landed.
            if op.writes() && err.outcome_unknown() {
                shared.ledger.unknown(*user, post, verb);
            }
        }
    }
    if op.writes() {
        shared.busy[u].store(false, Ordering::Release);
    }
}

/// Creates the run's posts, spread over its users so that no one user
/// meets the per-user write limit; a `429` is waited out as it asks.
async fn create_posts(api: &Api, cfg: &BenchConfig) -> Result<Vec<PostId>, BenchError> {
    let image = tally_client::tiny_png();
    let mut posts = Vec::with_capacity(cfg.posts);
    let mut i = 0;
    while posts.len() < cfg.posts {
        let token = &cfg.users[i % cfg.users.len()].1;
        i += 1;
        let caption = format!("{} · post {}", cfg.label, posts.len() + 1);
        match api
            .upload(token, image.clone(), "bench.png", &caption)
            .await
        {
            Ok(id) => posts.push(id),
            Err(ApiError::Status {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after,
                ..
            }) if i < cfg.posts * 4 => {
                let wait = retry_after.unwrap_or(1);
                tokio::time::sleep(Duration::from_secs(wait.min(10))).await;
            }
            Err(err) => return Err(BenchError::Setup(format!("creating a post: {err}"))),
        }
    }
    Ok(posts)
}

/// Parses `60s`, `2m`, `1h` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(s.trim().len()),
    );
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?}")),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::parse_duration("60s").unwrap().as_secs(), 60);
        assert_eq!(super::parse_duration("2m").unwrap().as_secs(), 120);
        assert_eq!(super::parse_duration("5").unwrap().as_secs(), 5);
        assert!(super::parse_duration("5x").is_err());
    }
}
