//! The load panel: bounded load runs that an operator starts from the web
//! client and that the server runs against itself.
//!
//! A run is `tally bench` in process: the same engine (open loop, Zipf-hot
//! posts, per-user ledger) sends real HTTP requests over loopback, so the
//! whole stack is measured, and the run ends with the same proof that every
//! count equals the ledger. The panel adds what a person watching needs: a
//! sample per second (throughput, p50/p99, and the write-behind's backlog and
//! lag from [`Likes::sync_status`]) that the client polls and plots.
//!
//! One run at a time per node, within fixed bounds, because a run puts real
//! load on the deployment and creates users and posts (named `{prefix}…` and
//! captioned `load run N · post M`). Reports land in
//! `{data_dir}/load-runs/{id}/` like the command line's.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::loadgen::{self, BenchConfig, Observer, Phase, Report, Second};
use crate::state::AppState;
use crate::store::{Likes, SyncStatus};

/// What an operator asks for. Every field is bounded (see [`LoadRequest::check`]).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadRequest {
    /// Simulated users, 1–100,000 (created for the run).
    pub users: u64,
    /// Requests per second, 1–5,000 (open loop: on a fixed schedule).
    pub rate: u32,
    /// 1–120.
    pub duration_secs: u64,
    /// Posts created for the run, 1–1,000.
    pub posts: usize,
    /// Zipf exponent of post popularity, 0–3 (0: uniform; 1: a few hot posts).
    pub zipf: f64,
}

impl LoadRequest {
    pub fn check(&self) -> Result<(), String> {
        let out = |what: &str, range: &str| Err(format!("{what} must be {range}"));
        if !(1..=100_000).contains(&self.users) {
            return out("users", "1–100000");
        }
        if !(1..=5_000).contains(&self.rate) {
            return out("rate", "1–5000");
        }
        if !(1..=120).contains(&self.duration_secs) {
            return out("durationSecs", "1–120");
        }
        if !(1..=1_000).contains(&self.posts) {
            return out("posts", "1–1000");
        }
        if !(0.0..=3.0).contains(&self.zipf) {
            return out("zipf", "0–3");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Creating the run's users.
    Seeding,
    /// Creating posts, then sending load.
    Running,
    /// Waiting for the write-behind and comparing every post with the ledger.
    Proving,
    Done,
    Failed,
}

/// One second of load.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    pub second: usize,
    /// Requests answered 200 in this second.
    pub ops: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Age of the oldest acknowledged change not yet durable.
    pub sync_lag_ms: f64,
    pub sync_backlog: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub count: u64,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The proof at the end of the run.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// `exact`: every post's count and likers equal the ledger; `drift`: not.
    pub verdict: String,
    /// (user, post) pairs the run changed.
    pub pairs: usize,
    pub likes_expected: usize,
    pub posts_checked: usize,
    /// The first differences found, when any.
    pub differences: Vec<String>,
    /// How long the durable store took to catch up.
    pub drain_seconds: f64,
}

/// A run as the client sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadRun {
    pub id: u64,
    pub state: RunState,
    pub config: LoadRequest,
    pub elapsed_secs: f64,
    pub samples: Vec<Sample>,
    /// Once done.
    pub total: Option<Totals>,
    /// Failed requests by operation, status and code.
    pub errors: BTreeMap<String, u64>,
    /// Requests the open loop could not start on time.
    pub missed: u64,
    pub consistency: Option<Verdict>,
    /// Why the run failed.
    pub error: Option<String>,
}

/// A run in progress or finished: the view plus the newest sync reading.
struct Run {
    started: Instant,
    view: Mutex<LoadRun>,
    sync: Mutex<SyncStatus>,
}

impl Run {
    fn update(&self, f: impl FnOnce(&mut LoadRun)) {
        if let Ok(mut view) = self.view.lock() {
            f(&mut view);
        }
    }

    fn snapshot(&self) -> Option<LoadRun> {
        let mut view = self.view.lock().ok()?.clone();
        if !matches!(view.state, RunState::Done | RunState::Failed) {
            view.elapsed_secs = self.started.elapsed().as_secs_f64();
        }
        Some(view)
    }
}

impl Observer for Run {
    fn phase(&self, phase: Phase) {
        self.update(|v| {
            v.state = match phase {
                Phase::Preparing | Phase::Running => RunState::Running,
                Phase::Proving => RunState::Proving,
            }
        });
    }

    fn second(&self, s: Second) {
        let sync = self.sync.lock().map(|s| *s).unwrap_or_default();
        self.update(|v| {
            v.samples.push(Sample {
                second: s.second,
                ops: s.ops,
                errors: s.errors,
                p50_ms: s.p50_ms,
                p99_ms: s.p99_ms,
                sync_lag_ms: sync.lag_ms,
                sync_backlog: sync.backlog,
            })
        });
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Invalid(String),
    #[error("a load run is in progress")]
    Active,
    /// A run's task panicked while holding the panel's lock.
    #[error("the load panel's state is poisoned")]
    Poisoned,
}

/// The node's load runs: at most one at a time, the latest kept for viewing.
pub struct LoadPanel {
    /// This server's own base URL (loopback).
    target: String,
    reports: PathBuf,
    next_id: AtomicU64,
    latest: Mutex<Option<Arc<Run>>>,
}

impl LoadPanel {
    pub fn new(target: String, reports: PathBuf) -> Self {
        Self {
            target,
            reports,
            next_id: AtomicU64::new(1),
            latest: Mutex::new(None),
        }
    }

    /// The latest run, running or finished.
    pub fn current(&self) -> Option<LoadRun> {
        self.latest.lock().ok()?.as_ref()?.snapshot()
    }

    /// Starts a run in the background and returns its first view.
    pub fn start(&self, state: &AppState, request: LoadRequest) -> Result<LoadRun, StartError> {
        request.check().map_err(StartError::Invalid)?;
        let mut latest = self.latest.lock().map_err(|_| StartError::Poisoned)?;
        let busy = latest
            .as_ref()
            .and_then(|run| run.snapshot())
            .is_some_and(|v| !matches!(v.state, RunState::Done | RunState::Failed));
        if busy {
            return Err(StartError::Active);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let run = Arc::new(Run {
            started: Instant::now(),
            view: Mutex::new(LoadRun {
                id,
                state: RunState::Seeding,
                config: request,
                elapsed_secs: 0.0,
                samples: Vec::new(),
                total: None,
                errors: BTreeMap::new(),
                missed: 0,
                consistency: None,
                error: None,
            }),
            sync: Mutex::new(SyncStatus::default()),
        });
        *latest = Some(run.clone());
        let first = run.snapshot();
        let job = Job {
            id,
            run,
            state: state.clone(),
            target: self.target.clone(),
            out_dir: self.reports.join(id.to_string()),
        };
        tokio::spawn(job.execute());
        first.ok_or(StartError::Poisoned)
    }
}

/// Everything one run needs, moved into its task.
struct Job {
    id: u64,
    run: Arc<Run>,
    state: AppState,
    target: String,
    out_dir: PathBuf,
}

impl Job {
    async fn execute(self) {
        let Some(config) = self.run.snapshot().map(|v| v.config) else {
            return;
        };
        tracing::info!(run = self.id, ?config, "load run started");
        let sampler = tokio::spawn(sample_sync(self.state.likes.clone(), self.run.clone()));
        let result = self.load(&config).await;
        sampler.abort();
        match result {
            Ok(report) => {
                tracing::info!(
                    run = self.id,
                    verdict = report.consistency.verdict,
                    per_sec = report.summary.total.per_sec,
                    "load run finished"
                );
                self.run.update(|v| finish(v, &report));
            }
            Err(err) => {
                tracing::warn!(run = self.id, error = %err, "load run failed");
                self.run.update(|v| {
                    v.state = RunState::Failed;
                    v.error = Some(err);
                });
            }
        }
        let elapsed = self.run.started.elapsed().as_secs_f64();
        self.run.update(|v| v.elapsed_secs = elapsed);
    }

    async fn load(&self, config: &LoadRequest) -> Result<Report, String> {
        let users = self.seed(config.users).await?;
        let cfg = BenchConfig {
            target: self.target.clone(),
            user_count: users.len(),
            users,
            posts: config.posts,
            duration: Duration::from_secs(config.duration_secs),
            rate: Some(config.rate),
            concurrency: 256,
            zipf_exponent: config.zipf,
            mix: "like=60,unlike=20,toggle=5,feed=10,likers=5".parse()?,
            timeout: Duration::from_secs(10),
            out_dir: self.out_dir.clone(),
            progress: false,
            subscribers: 0,
            production: None,
            label: format!("load run {}", self.id),
            observer: Some(self.run.clone()),
        };
        loadgen::run(cfg).await.map_err(|e| e.to_string())
    }

    /// Creates the run's users and mints their tokens in process.
    async fn seed(&self, count: u64) -> Result<Vec<(i64, String)>, String> {
        let prefix = format!("loadrun{}_{:06x}_", self.id, rand::random::<u32>() >> 8);
        let seeded = self
            .state
            .catalog
            .seed_users(&prefix, count)
            .await
            .map_err(|e| format!("creating users: {e}"))?;
        let keys = self.state.tokens.clone();
        tokio::task::spawn_blocking(move || {
            (0..seeded.count)
                .map(|n| {
                    let id = seeded.first_id + n as i64;
                    let (token, _) = keys
                        .issue(id, &format!("{prefix}{n}"))
                        .map_err(|e| e.to_string())?;
                    Ok((id, token))
                })
                .collect()
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// Reads the write-behind's backlog and lag once a second.
async fn sample_sync(likes: Arc<dyn Likes>, run: Arc<Run>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        match likes.sync_status().await {
            Ok(status) => {
                if let Ok(mut s) = run.sync.lock() {
                    *s = status;
                }
            }
            Err(err) => tracing::debug!(error = %err, "sync status unavailable"),
        }
    }
}

/// The final numbers: the engine's own per-second timeline replaces the
/// live samples' (the last second may have missed its tick), keeping the
/// sync readings taken during the run.
fn finish(view: &mut LoadRun, report: &Report) {
    let s = &report.summary;
    let sync: Vec<(f64, u64)> = view
        .samples
        .iter()
        .map(|x| (x.sync_lag_ms, x.sync_backlog))
        .collect();
    view.samples = s
        .timeline
        .iter()
        .map(|t| {
            let (lag, backlog) = sync
                .get(t.second)
                .or(sync.last())
                .copied()
                .unwrap_or_default();
            Sample {
                second: t.second,
                ops: t.ops,
                errors: t.errors,
                p50_ms: t.p50_ms,
                p99_ms: t.p99_ms,
                sync_lag_ms: lag,
                sync_backlog: backlog,
            }
        })
        .collect();
    view.total = Some(Totals {
        count: s.total.count,
        per_sec: s.total.per_sec,
        p50_ms: s.total.p50_ms,
        p99_ms: s.total.p99_ms,
    });
    view.errors = s.errors.clone();
    view.missed = s.missed;
    let c = &report.consistency;
    view.consistency = Some(Verdict {
        verdict: c.verdict.to_owned(),
        pairs: c.pairs,
        likes_expected: c.likes_expected,
        posts_checked: c.posts_checked,
        differences: c.differences.clone(),
        drain_seconds: c.drain_seconds,
    });
    view.state = RunState::Done;
}
