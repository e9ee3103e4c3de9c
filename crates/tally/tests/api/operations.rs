//! Health, readiness, metrics, OpenAPI and docs, and rate limits.

use reqwest::StatusCode;
use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, assert_error};

backend_tests!(operational_endpoints, writes_are_rate_limited_per_user);

async fn operational_endpoints(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let health: Value = app.get_json("/healthz").await;
    assert_eq!(health["status"], "ok");
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ready");

    let user = app.user("ops").await;
    let post = app.post(&user).await;
    app.like(&user, post).await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    assert!(metrics.contains("tally_like_ops_total"), "{metrics}");
    assert!(
        metrics.contains("route=\"/v1/posts/{id}/like\""),
        "{metrics}"
    );

    let spec: Value = app.get_json("/openapi.json").await;
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/users",
        "/v1/sessions",
        "/v1/posts",
        "/v1/posts/trending",
        "/v1/posts/{id}",
        "/v1/posts/{id}/like",
        "/v1/posts/{id}/like/toggle",
        "/v1/posts/{id}/likers",
    ] {
        assert!(
            spec["paths"].get(path).is_some(),
            "{path} missing from OpenAPI"
        );
    }
    let docs = app.get("/docs/").await;
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(
        docs.text()
            .await
            .unwrap()
            .to_lowercase()
            .contains("swagger")
    );
}

async fn writes_are_rate_limited_per_user(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.rate_limits.user_writes_per_sec = 1;
        s.rate_limits.user_write_burst = 5;
    })
    .await;
    let [a, b]: [_; 2] = app.seed_users(2).await.try_into().unwrap();
    // Uploading counts as a write too: use the burst of one user for it.
    let post = app.post(&b).await;
    let mut limited = None;
    for _ in 0..10 {
        let r = app.like(&a, post).await;
        if r.status() != StatusCode::OK {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.expect("the 6th write within a second is limited");
    assert!(limited.headers().get("retry-after").is_some());
    assert_error(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Another user is not affected.
    assert_eq!(app.like(&b, post).await.status(), StatusCode::OK);
}
