//! The load panel's API types: what an operator asks for, and what the
//! client polls and plots.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
