//! The alert rules of deploy/prometheus against a real node: a rule that can
//! never fire (a metric renamed, a label that does not exist, a threshold
//! the code cannot reach) passes `promtool test rules` on made-up series but
//! fails here.
//!
//! A `tally serve` process (not an in-process app: the metrics recorder is
//! process-wide, and other tests in this binary run reconciliations of their
//! own) on Redis + PostgreSQL, reconciling every second without repair; a
//! real `prometheus` (Debian's `prometheus` package, which the test command
//! installs) scraping it every second with the shipped rules. The drift
//! alert stays quiet while the stores agree, and fires once a count is
//! changed in Redis behind the node's back.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::Value;
use tally_server::config::Settings;

use crate::helpers::{test_admin_database_url, test_redis_url, use_redis_pg};
use crate::instances::free_port;
use crate::nodes::{Node, create_post, seed};

const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/prometheus/tally-rules.yml"
);
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/grafana/tally.json"
);
const OPERATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/OPERATIONS.md");

/// The PromQL of every panel of the Grafana dashboard.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(DASHBOARD).expect("read deploy/grafana/tally.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let queries: Vec<String> = panels
        .iter()
        .filter_map(|p| p["targets"].as_array())
        .flatten()
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(
        queries.len() > 10,
        "the dashboard has few queries: {queries:?}"
    );
    queries
}

/// Tally's metric names a text mentions (histogram series as their base name).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| {
            ["tally_", "process_", "http_request"]
                .iter()
                .any(|p| w.starts_with(p))
        })
        .map(|w| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| w.strip_suffix(s))
                .unwrap_or(w)
                .to_owned()
        })
        .collect()
}

/// Every metric the rules and the dashboard read is one docs/OPERATIONS.md
/// documents: a renamed or misspelt metric would make a rule or a panel
/// silently empty.
#[test]
fn rules_and_dashboard_read_documented_metrics() {
    let docs = std::fs::read_to_string(OPERATIONS).expect("read docs/OPERATIONS.md");
    let documented = metric_names(&docs);
    let rules = std::fs::read_to_string(RULES).expect("read the rules");
    let used = metric_names(&rules)
        .into_iter()
        .chain(dashboard_queries().iter().flat_map(|q| metric_names(q)))
        .collect::<std::collections::BTreeSet<_>>();
    assert!(used.contains("tally_reconcile_drift_left"), "{used:?}");
    let missing: Vec<_> = used.difference(&documented).collect();
    assert!(missing.is_empty(), "not in docs/OPERATIONS.md: {missing:?}");
}

/// A Prometheus server scraping one node every second with the shipped
/// rules, on a free port with its own storage; killed on drop.
struct Prometheus {
    child: Child,
    base: String,
}

impl Prometheus {
    async fn start(target: &str, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("prometheus dir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {RULES}\n\
                 scrape_configs:\n  - job_name: tally\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "`prometheus` is required (Debian package `prometheus`; ./scripts/test installs it): {e}"
                )
            });
        let prometheus = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = client
                .get(format!("{}/-/ready", prometheus.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return prometheus;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn api(&self, path: &str) -> Value {
        let r = Client::new()
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("prometheus answers");
        let body: Value = r.json().await.expect("prometheus JSON");
        assert_eq!(body["status"], "success", "{path}: {body}");
        body["data"].clone()
    }

    /// Runs an instant query; fails the test if Prometheus refuses it.
    async fn query(&self, query: &str) -> Value {
        let r = Client::new()
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", query)])
            .send()
            .await
            .expect("prometheus answers");
        let body: Value = r.json().await.expect("prometheus JSON");
        assert_eq!(body["status"], "success", "{query}: {body}");
        body["data"].clone()
    }

    /// The value of an instant query with one series, once there is one.
    async fn scalar(&self, query: &str) -> Option<f64> {
        let data = self.query(query).await;
        data["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// The state (`pending`, `firing`) of each active alert of that name.
    async fn alert_states(&self, name: &str) -> Vec<String> {
        let data = self.api("/api/v1/alerts").await;
        data["alerts"]
            .as_array()
            .map(|alerts| {
                alerts
                    .iter()
                    .filter(|a| a["labels"]["alertname"] == name)
                    .filter_map(|a| a["state"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 250 ms until it gives a value or `secs` pass.
async fn until<T, F: std::future::Future<Output = Option<T>>>(
    secs: u64,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn scrape(client: &Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of an unlabelled sample in a scrape.
fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drift_alert_fires_on_a_real_node_with_drift() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = Settings::default();
    use_redis_pg(&mut settings, &test_redis_url(), &test_admin_database_url()).await;
    let users = seed(&settings, dir.path(), 2);
    let node = Node::start_with(
        &settings,
        dir.path(),
        &[
            ("TALLY_RECONCILE_INTERVAL_SECS", "1"),
            ("TALLY_RECONCILE_REPAIR", "false"),
        ],
    );
    let client = Client::new();
    let post = create_post(&client, &node.base, &users[0].1).await;
    let liked = client
        .put(format!("{}/v1/posts/{post}/like", node.base))
        .bearer_auth(&users[1].1)
        .send()
        .await
        .expect("like");
    assert!(liked.status().is_success(), "like: {}", liked.status());

    // The node exports what the rules read, and its stores agree: a pass
    // has run since the like reached PostgreSQL and found nothing.
    let first = scrape(&client, &node.base).await;
    for name in ["process_open_fds", "process_max_fds"] {
        assert!(
            sample(&first, name).is_some_and(|v| v > 0.0),
            "{name} missing:\n{first}"
        );
    }
    assert!(
        first.contains("tally_store_up{store=\"catalog\"} 1"),
        "{first}"
    );
    assert!(
        first.contains("tally_store_up{store=\"redis\"} 1"),
        "{first}"
    );
    until(30, "a reconciliation pass without drift", || async {
        let s = scrape(&client, &node.base).await;
        (sample(&s, "tally_reconcile_last_run_timestamp_seconds").is_some()
            && sample(&s, "tally_reconcile_drift_left") == Some(0.0))
        .then_some(())
    })
    .await;

    let prometheus = Prometheus::start(node.addr(), &dir.path().join("prometheus")).await;
    // Prometheus has scraped the node and evaluated the rules on it: quiet.
    until(30, "prometheus scraping the node", || async {
        prometheus.scalar("tally_reconcile_drift_left").await
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        prometheus.scalar("tally_reconcile_drift_left").await,
        Some(0.0)
    );
    assert!(prometheus.alert_states("TallyDriftLeft").await.is_empty());

    // Drift: the count in Redis changed behind the node's back.
    let keys = tally_store::production::Keys::new(
        &settings.production.key_prefix,
        settings.production.partitions,
    );
    let redis = redis::Client::open(test_redis_url()).expect("redis url");
    let mut conn = redis
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: () = redis::cmd("SET")
        .arg(keys.count(post))
        .arg(42)
        .query_async(&mut conn)
        .await
        .expect("SET the count");

    let left = until(30, "the node reporting drift left", || async {
        sample(
            &scrape(&client, &node.base).await,
            "tally_reconcile_drift_left",
        )
        .filter(|v| *v > 0.0)
    })
    .await;
    assert_eq!(left, 1.0, "one post drifted");
    until(30, "TallyDriftLeft firing in prometheus", || async {
        prometheus
            .alert_states("TallyDriftLeft")
            .await
            .iter()
            .any(|s| s == "firing")
            .then_some(())
    })
    .await;
    // Every panel of the dashboard is a query Prometheus accepts, and the
    // panels on what this node surely has show data.
    for query in dashboard_queries() {
        let query = query.replace("$instance", ".*");
        let data = prometheus.query(&query).await;
        let has_data = data["result"].as_array().is_some_and(|r| !r.is_empty());
        if query.contains("tally_reconcile_drift_left") || query.contains("process_open_fds") {
            assert!(has_data, "no data for {query}");
        }
    }
    // Nothing else fires on a healthy node.
    for quiet in [
        "TallyFallbackActive",
        "TallyPostgresUnreachable",
        "TallyRedisUnreachable",
        "TallyOpenFilesNearLimit",
        "TallyNodeDown",
    ] {
        assert!(
            prometheus.alert_states(quiet).await.is_empty(),
            "{quiet} active"
        );
    }
}
