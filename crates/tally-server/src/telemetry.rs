//! Logs and metrics.
//!
//! Logs: `tracing`, text or JSON. Requests are not logged one line each at
//! the default level: at ~20k likes/s that line cost ~12 % of throughput
//! (issue 14), and counters and histograms (`/metrics`) say the same for
//! every request. Failed requests (5xx) are logged with their route, and
//! `RUST_LOG=tower_http=debug` brings the per-request lines back. Colours
//! only when stderr is a terminal. Metrics: the `metrics` facade with a
//! Prometheus recorder, installed once per process (tests start many apps in
//! one process and share it). Metrics are never labelled by post or user id:
//! that would make one time series per post.
//!
//! Some gauges are read when `/metrics` is scraped rather than kept up to
//! date ([`render`]): the process's open files and memory (what the "open
//! files near the limit" alert in deploy/prometheus needs, and what the soak
//! benchmark watches), and whether the stores answer (so an alert can name
//! the store that is down, not just see likes failing).

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::state::AppState;
use tally_store::Health;

/// Installs the global tracing subscriber. `RUST_LOG` overrides the level.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // Already installed (a test harness, or a second call) is fine.
    let _ = result;
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder is installed; the handle then
            // renders an empty page rather than taking the process down.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// How long a scrape waits for a store's ping before calling it down.
const STORE_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// The `/metrics` page: refreshes the scrape-time gauges, then renders.
pub async fn render(state: &AppState) -> String {
    record_process();
    record_stores(state).await;
    state.metrics.render()
}

/// `process_open_fds`, `process_max_fds` (the soft `RLIMIT_NOFILE`) and
/// `process_resident_memory_bytes`, named as Prometheus's own client
/// libraries name them. Linux only (read from /proc); elsewhere absent.
fn record_process() {
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!("process_open_fds").set(dir.count() as f64);
    }
    if let Some(max) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .as_deref()
        .and_then(max_open_files)
    {
        metrics::gauge!("process_max_fds").set(max);
    }
    if let Some(rss) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(resident_bytes)
    {
        metrics::gauge!("process_resident_memory_bytes").set(rss);
    }
}

/// The soft limit of the "Max open files" line of /proc/self/limits.
fn max_open_files(limits: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// VmRSS of /proc/self/status, in bytes.
fn resident_bytes(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// `tally_store_up{store}`: 1 when the store answers. `catalog` is
/// PostgreSQL on the production backend (SQLite on the embedded one),
/// pinged with a bounded wait; `redis` (production only) is 0 while this
/// node serves likes from PostgreSQL because Redis is unreachable.
async fn record_stores(state: &AppState) {
    let catalog = matches!(
        tokio::time::timeout(STORE_PING_TIMEOUT, state.catalog.ping()).await,
        Ok(Ok(()))
    );
    metrics::gauge!("tally_store_up", "store" => "catalog").set(f64::from(u8::from(catalog)));
    if state.settings.redis_url.is_some() {
        let redis = matches!(state.likes.health().await, Health::Ready);
        metrics::gauge!("tally_store_up", "store" => "redis").set(f64::from(u8::from(redis)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_open_files_limit_and_rss() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             unlimited            unlimited            processes \n\
                      Max open files            20000                20000                files     \n";
        assert_eq!(max_open_files(limits), Some(20000.0));
        assert_eq!(
            resident_bytes("Name:\ttally\nVmRSS:\t   16384 kB\n"),
            Some(16_777_216.0)
        );
        assert_eq!(max_open_files("nothing"), None);
    }
}
