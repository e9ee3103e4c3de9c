//! The operator's load panel, driven over HTTP as the web client drives it:
//! who may use it, its bounds, one run at a time, and a run that ends with
//! the ledger's proof.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, TestUser, assert_error};

backend_tests!(load_panel_runs_and_proves, load_panel_is_off_by_default);

const SMALL_RUN: fn() -> Value =
    || json!({"users": 40, "rate": 100, "durationSecs": 2, "posts": 4, "zipf": 1.1});

async fn start(app: &TestApp, user: &TestUser, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/admin/load-runs"))
        .bearer_auth(&user.token)
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn current(app: &TestApp, user: &TestUser) -> reqwest::Response {
    app.client
        .get(app.url("/v1/admin/load-runs/current"))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("request")
}

async fn me(app: &TestApp, user: &TestUser) -> Value {
    app.client
        .get(app.url("/v1/me"))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

async fn load_panel_is_off_by_default(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("someone").await;
    let who = me(&app, &user).await;
    assert_eq!(who["username"], "someone");
    assert_eq!(who["id"], user.id);
    assert_eq!(who["loadPanel"], false);
    assert_error(
        start(&app, &user, &SMALL_RUN()).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_error(
        current(&app, &user).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let anonymous = app
        .client
        .post(app.url("/v1/admin/load-runs"))
        .json(&SMALL_RUN())
        .send()
        .await
        .expect("request");
    assert_error(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let expired = app
        .client
        .get(app.url("/v1/me"))
        .bearer_auth("not.a.token")
        .send()
        .await
        .expect("request");
    assert_error(expired, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

async fn load_panel_runs_and_proves(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.load_panel.enabled = true;
        s.load_panel.admins = vec!["boss".into()];
    })
    .await;
    let boss = app.user("boss").await;
    let worker = app.user("worker").await;
    assert_eq!(me(&app, &boss).await["loadPanel"], true);
    assert_eq!(me(&app, &worker).await["loadPanel"], false);
    assert_error(
        start(&app, &worker, &SMALL_RUN()).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_error(
        current(&app, &boss).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    for bad in [
        json!({"users": 0, "rate": 100, "durationSecs": 2, "posts": 4, "zipf": 1.0}),
        json!({"users": 10, "rate": 5001, "durationSecs": 2, "posts": 4, "zipf": 1.0}),
        json!({"users": 10, "rate": 10, "durationSecs": 121, "posts": 4, "zipf": 1.0}),
        json!({"users": 10, "rate": 10, "durationSecs": 2, "posts": 1001, "zipf": 1.0}),
        json!({"users": 10, "rate": 10, "durationSecs": 2, "posts": 4, "zipf": -1.0}),
        json!({"users": 10, "rate": 10, "durationSecs": 2, "posts": 4}),
        json!({"users": 10, "rate": 10, "durationSecs": 2, "posts": 4, "zipf": 1.0, "x": 1}),
    ] {
        assert_error(
            start(&app, &boss, &bad).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .await;
    }

    let r = start(&app, &boss, &SMALL_RUN()).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let first: Value = r.json().await.expect("json");
    assert_eq!(first["id"], 1);
    assert_eq!(first["config"]["users"], 40);
    assert_error(
        start(&app, &boss, &SMALL_RUN()).await,
        StatusCode::CONFLICT,
        "load_run_active",
    )
    .await;

    let deadline = Instant::now() + Duration::from_secs(120);
    let run = loop {
        let run: Value = current(&app, &boss).await.json().await.expect("json");
        match run["state"].as_str() {
            Some("done") => break run,
            Some("seeding" | "running" | "proving") => {}
            other => panic!("unexpected state {other:?}: {run}"),
        }
        assert!(Instant::now() < deadline, "run did not finish: {run}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let verdict = &run["consistency"];
    assert_eq!(verdict["verdict"], "exact", "{run}");
    assert_eq!(verdict["postsChecked"], 4);
    assert!(verdict["pairs"].as_u64().unwrap() > 0, "{run}");
    let samples = run["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 2, "one sample per second: {run}");
    let answered: u64 = samples.iter().map(|s| s["ops"].as_u64().unwrap()).sum();
    assert_eq!(run["total"]["count"].as_u64(), Some(answered));
    assert!(
        answered >= 150,
        "{answered} of 200 requests answered: {run}"
    );
    assert!(samples.iter().all(|s| s["p99Ms"].as_f64().unwrap() > 0.0));
    assert!(samples.iter().all(|s| s["syncLagMs"].as_f64().is_some()));

    // The run's posts are real posts, and their counts are the ledger's.
    app.drain().await;
    let feed = app.get_json("/v1/posts?limit=10").await;
    let run_posts: Vec<&Value> = feed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["caption"]
                .as_str()
                .unwrap()
                .starts_with("load run 1 · post")
        })
        .collect();
    assert_eq!(run_posts.len(), 4, "{feed}");
    let counted: i64 = run_posts
        .iter()
        .map(|p| p["likeCount"].as_i64().unwrap())
        .sum();
    assert_eq!(counted, verdict["likesExpected"].as_i64().unwrap());

    // Finished: the next run may start.
    let r = start(&app, &boss, &SMALL_RUN()).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.json::<Value>().await.unwrap()["id"], 2);
}
