//! The load generator against a real server: it must end with `exact`.

use std::time::Duration;

use tally_bench::{self as loadgen, BenchConfig};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp};

backend_tests!(
    bench_run_proves_the_counts_exact,
    the_proof_catches_a_missing_like
);

async fn bench_run_proves_the_counts_exact(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let users = app.seed_users(300).await;
    let production = if backend != Backend::Embedded {
        Some(app.production().await)
    } else {
        None
    };
    let out = tempfile::tempdir().expect("dir");
    let report = loadgen::run(BenchConfig {
        target: app.base.clone(),
        user_count: users.len(),
        users: users.iter().map(|u| (u.id, u.token.clone())).collect(),
        posts: 5,
        duration: Duration::from_secs(2),
        rate: Some(400),
        concurrency: 64,
        zipf_exponent: 1.1,
        mix: "like=50,unlike=20,toggle=10,feed=10,likers=10"
            .parse()
            .expect("mix"),
        timeout: Duration::from_secs(10),
        out_dir: out.path().to_path_buf(),
        progress: false,
        subscribers: 20,
        production,
        label: "test".into(),
        observer: None,
    })
    .await
    .expect("bench run");
    assert_eq!(
        report.consistency.verdict, "exact",
        "{:?}",
        report.consistency.differences
    );
    assert!(
        report.consistency.likes_expected > 50,
        "the run liked something"
    );
    assert_eq!(
        report.consistency.stores_checked_directly,
        backend != Backend::Embedded
    );
    // Every scheduled request (2 s at 400/s) was answered or missed; none
    // failed.
    assert_eq!(
        report.summary.total.count + report.summary.missed,
        800,
        "{} answered, {} missed",
        report.summary.total.count,
        report.summary.missed
    );
    assert!(
        report.summary.errors.is_empty(),
        "{:?}",
        report.summary.errors
    );
    let files: Vec<_> = std::fs::read_dir(out.path())
        .expect("out")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(
        files.iter().any(|f| f.to_string_lossy().ends_with(".html")),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.to_string_lossy().ends_with(".json")),
        "{files:?}"
    );
}

async fn the_proof_catches_a_missing_like(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let users = app.seed_users(2).await;
    let post = app.post(&users[0]).await;
    app.like(&users[0], post).await;
    // The ledger claims a second like that the server never saw.
    let ledger = loadgen::Ledger::default();
    ledger.answered(users[0].id, post, true);
    ledger.answered(users[1].id, post, true);
    let tokens: Vec<_> = users.iter().map(|u| (u.id, u.token.clone())).collect();
    let c = loadgen::prove(
        &app.api(),
        &tokens,
        &[post],
        &ledger,
        None,
        Duration::from_millis(200),
    )
    .await
    .expect("prove");
    assert_eq!(c.verdict, "drift");
    assert!(
        c.differences[0].contains("likeCount 1, ledger 2"),
        "{:?}",
        c.differences
    );
}
