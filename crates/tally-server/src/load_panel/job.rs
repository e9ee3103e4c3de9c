//! One load run: seed its users, drive the bench engine over loopback,
//! sample the write-behind, and map the engine's report to the panel's view.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tally_bench::{BenchConfig, Observer, Phase, Report, Second};
use tally_store::accounts;
use tally_store::{Likes, SyncStatus};
use tokio_util::sync::CancellationToken;

use super::api::{LoadRequest, LoadRun, RunState, Sample, Totals, Verdict};
use crate::state::AppState;

/// A run in progress or finished: the view plus the newest sync reading.
pub(super) struct Run {
    pub(super) started: Instant,
    pub(super) view: Mutex<LoadRun>,
    pub(super) sync: Mutex<SyncStatus>,
}

impl Run {
    pub(super) fn update(&self, f: impl FnOnce(&mut LoadRun)) {
        if let Ok(mut view) = self.view.lock() {
            f(&mut view);
        }
    }

    pub(super) fn snapshot(&self) -> Option<LoadRun> {
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

/// Everything one run needs, moved into its task.
pub(super) struct Job {
    pub(super) id: u64,
    pub(super) run: Arc<Run>,
    pub(super) state: AppState,
    pub(super) target: String,
    pub(super) out_dir: PathBuf,
}

impl Job {
    /// Runs the load and records the outcome; a shutdown (`stop`) ends
    /// it as failed.
    pub(super) async fn execute(
        self,
        stop: CancellationToken,
    ) -> Result<(), std::convert::Infallible> {
        let Some(config) = self.run.snapshot().map(|v| v.config) else {
            return Ok(());
        };
        tracing::info!(run = self.id, ?config, "load run started");
        let result = tokio::select! {
            result = self.load(&config) => result,
            // Sampling ends with the run (this select drops it).
            () = sample_sync(self.state.likes.clone(), self.run.clone()) => Err("sampling stopped".to_owned()),
            () = stop.cancelled() => Err("the server is shutting down".to_owned()),
        };
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
        Ok(())
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
        tally_bench::run(cfg).await.map_err(|e| e.to_string())
    }

    /// Creates the run's users and mints their tokens in process.
    async fn seed(&self, count: u64) -> Result<Vec<(i64, String)>, String> {
        let prefix = format!("loadrun{}_{:06x}_", self.id, rand::random::<u32>() >> 8);
        accounts::seed_users(
            self.state.catalog.as_ref(),
            self.state.tokens.clone(),
            &prefix,
            count,
        )
        .await
        .map(|seeded| seeded.tokens)
        .map_err(|e| format!("creating users: {e}"))
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
