//! Latency histograms (HDR, per operation and per second), throughput and
//! errors by status and code.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::ops::Op;

fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

#[derive(Default)]
struct Inner {
    per_op: BTreeMap<Op, Histogram<u64>>,
    /// Per second of the run: all operations.
    per_second: Vec<Histogram<u64>>,
    /// Per second of the run: failed requests.
    errors_per_second: Vec<u64>,
    errors: BTreeMap<String, u64>,
    /// Requests the open loop could not start on time (in-flight cap hit).
    missed: u64,
}

/// Shared by all request tasks.
#[derive(Default)]
pub struct Stats {
    /// A std mutex: recording is a few adds, never awaited.
    inner: Mutex<Inner>,
}

#[derive(Debug, Serialize)]
pub struct OpSummary {
    pub count: u64,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Second {
    pub second: usize,
    pub ops: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub per_op: BTreeMap<String, OpSummary>,
    pub total: OpSummary,
    pub timeline: Vec<Second>,
    pub errors: BTreeMap<String, u64>,
    pub missed: u64,
    /// (percentile, ms) of all operations, for the distribution plot.
    pub distribution: Vec<(f64, f64)>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn summarize(h: &Histogram<u64>, seconds: f64) -> OpSummary {
    OpSummary {
        count: h.len(),
        per_sec: h.len() as f64 / seconds.max(0.001),
        p50_ms: ms(h.value_at_quantile(0.5)),
        p90_ms: ms(h.value_at_quantile(0.9)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    }
}

fn second_of(i: &Inner, second: usize) -> Second {
    let h = i.per_second.get(second);
    Second {
        second,
        ops: h.map_or(0, Histogram::len),
        errors: i.errors_per_second.get(second).copied().unwrap_or(0),
        p50_ms: h.map_or(0.0, |h| ms(h.value_at_quantile(0.5))),
        p99_ms: h.map_or(0.0, |h| ms(h.value_at_quantile(0.99))),
    }
}

impl Stats {
    pub fn record(&self, op: Op, second: usize, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, 60_000_000);
        if let Ok(mut i) = self.inner.lock() {
            let _ = i.per_op.entry(op).or_insert_with(histogram).record(us);
            while i.per_second.len() <= second {
                i.per_second.push(histogram());
            }
            let _ = i.per_second[second].record(us);
        }
    }

    pub fn error(&self, op: Op, second: usize, what: &str) {
        if let Ok(mut i) = self.inner.lock() {
            *i.errors.entry(format!("{} {what}", op.name())).or_default() += 1;
            if i.errors_per_second.len() <= second {
                i.errors_per_second.resize(second + 1, 0);
            }
            i.errors_per_second[second] += 1;
        }
    }

    pub fn missed(&self) {
        if let Ok(mut i) = self.inner.lock() {
            i.missed += 1;
        }
    }

    /// One second of the run (by intended start time), as far as it has
    /// been recorded.
    pub fn second(&self, second: usize) -> Second {
        match self.inner.lock() {
            Ok(i) => second_of(&i, second),
            Err(_) => second_of(&Inner::default(), second),
        }
    }

    pub fn summary(&self, seconds: f64) -> Summary {
        let Ok(i) = self.inner.lock() else {
            return Summary {
                per_op: BTreeMap::new(),
                total: summarize(&histogram(), 1.0),
                timeline: vec![],
                errors: BTreeMap::new(),
                missed: 0,
                distribution: vec![],
            };
        };
        let mut total = histogram();
        for h in i.per_op.values() {
            let _ = total.add(h);
        }
        let distribution = [0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0]
            .into_iter()
            .map(|q| (q * 100.0, ms(total.value_at_quantile(q))))
            .collect();
        Summary {
            per_op: i
                .per_op
                .iter()
                .map(|(op, h)| (op.name().to_owned(), summarize(h, seconds)))
                .collect(),
            total: summarize(&total, seconds),
            timeline: (0..i.per_second.len().max(i.errors_per_second.len()))
                .map(|second| second_of(&i, second))
                .collect(),
            errors: i.errors.clone(),
            missed: i.missed,
            distribution,
        }
    }
}
