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

mod api;
mod job;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tally_store::{Stage, SyncStatus, Tasks};

pub use api::{LoadRequest, LoadRun, RunState, Sample, Totals, Verdict};
use job::{Job, Run};

use crate::state::AppState;

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
    /// Runs are tasks of the node, stopped at shutdown.
    tasks: Tasks,
}

impl LoadPanel {
    pub fn new(target: String, reports: PathBuf, tasks: Tasks) -> Self {
        Self {
            target,
            reports,
            next_id: AtomicU64::new(1),
            latest: Mutex::new(None),
            tasks,
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
        self.tasks
            .spawn(Stage::Serve, "load run", move |stop| job.execute(stop));
        first.ok_or(StartError::Poisoned)
    }
}
