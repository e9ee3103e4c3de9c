//! Sign-up, sign-in, tokens, and malformed requests.

use reqwest::StatusCode;
use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, assert_error};

backend_tests!(
    signup_then_login,
    signup_rejects_bad_input,
    login_rejects_bad_credentials,
    tokens_are_checked,
    malformed_bodies_get_json_errors,
);

async fn signup_then_login(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let r = app.signup("ann_1", "password123").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let user: Value = r.json().await.unwrap();
    assert_eq!(user["username"], "ann_1");
    assert!(user["id"].as_i64().unwrap() > 0);
    assert!(user.get("password").is_none() && user.get("passwordHash").is_none());

    let r = app.login("ann_1", "password123").await;
    assert_eq!(r.status(), StatusCode::OK);
    let session: Value = r.json().await.unwrap();
    assert_eq!(session["user"], user);
    assert!(session["token"].as_str().unwrap().len() > 20);
    assert!(session["expiresAt"].as_str().unwrap().contains('T'));

    assert_error(
        app.signup("ann_1", "otherpassword").await,
        StatusCode::CONFLICT,
        "username_taken",
    )
    .await;
}

async fn signup_rejects_bad_input(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for name in [
        "ab",
        "Ann",
        "has space",
        "dash-name",
        &"x".repeat(33),
        "ünï",
    ] {
        assert_error(
            app.signup(name, "password123").await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .await;
    }
    assert_error(
        app.signup("ann", "short").await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    assert_error(
        app.signup("ann", &"p".repeat(129)).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
}

async fn login_rejects_bad_credentials(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.user("bob").await;
    assert_error(
        app.login("bob", "wrongpassword").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    assert_error(
        app.login("nobody", "password123").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    // Seeded users have no password at all.
    app.seed_users(1).await;
    assert_error(
        app.login("seed_0", "").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
}

async fn tokens_are_checked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("carol").await;
    let post = app.post(&user).await;
    let path = format!("/v1/posts/{post}/like");

    let missing = app.client.put(app.url(&path)).send().await.unwrap();
    assert_error(missing, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let mut forged = user.token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert_error(
        app.like_op(reqwest::Method::PUT, &path, &forged).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;

    // A token signed by another deployment's key.
    let other = TestApp::spawn(backend).await;
    let stranger = other.user("carol").await;
    assert_error(
        app.like(&stranger, post).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;

    let wrong_scheme = app
        .client
        .put(app.url(&path))
        .header("authorization", format!("Basic {}", user.token))
        .send()
        .await
        .unwrap();
    assert_error(wrong_scheme, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // An invalid token on a read is an error too, not a silent anonymous read.
    let r = app
        .client
        .get(app.url("/v1/posts"))
        .bearer_auth("garbage")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;

    assert_eq!(app.like(&user, post).await.status(), StatusCode::OK);
}

async fn malformed_bodies_get_json_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let url = app.url("/v1/users");
    let send = |body: &'static str, content_type: &'static str| {
        app.client
            .post(&url)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_error(
        send("{not json", "application/json").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    assert_error(
        send(
            r#"{"username": 5, "password": "password123"}"#,
            "application/json",
        )
        .await
        .unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    assert_error(
        send(r#"{"username": "dave"}"#, "application/json")
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    assert_error(
        send(
            r#"{"username": "dave", "password": "password123", "admin": true}"#,
            "application/json",
        )
        .await
        .unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    assert_error(
        send(
            r#"{"username": "dave", "password": "password123"}"#,
            "text/plain",
        )
        .await
        .unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    let huge = format!(
        r#"{{"username": "dave", "password": "{}"}}"#,
        "x".repeat(100_000)
    );
    // The server answers before reading the whole body and drops the
    // connection: use one that is not pooled for the next requests.
    let r = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    let r = app.get("/v1/nothing-here").await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = app.client.patch(app.url("/v1/users")).send().await.unwrap();
    assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}
