//! Revocable tokens (issue 12, defect 4): sign-out, tokens of users that do
//! not exist, and `tally keys rotate`. A validly signed token of an unknown
//! user used to be accepted (its likes counted, `/v1/me` answering with the
//! token's name, an upload answering 500), and nothing could be revoked.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, TestUser, assert_error, png};

backend_tests!(
    sign_out_revokes_that_session_only,
    tokens_of_unknown_users_are_refused,
    tokens_of_deleted_users_are_refused,
    an_upload_by_a_user_deleted_within_the_cache_window_is_refused,
    keys_rotate_keeps_old_tokens_for_the_grace_period,
);

/// Generous: a debug build on a busy two-core machine.
const DEADLINE: Duration = Duration::from_secs(60);

async fn sign_in(app: &TestApp, username: &str) -> TestUser {
    let body: Value = app
        .login(username, "password123")
        .await
        .json()
        .await
        .expect("json");
    TestUser {
        id: body["user"]["id"].as_i64().expect("id"),
        token: body["token"].as_str().expect("token").to_owned(),
    }
}

async fn sign_out(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .delete(app.url("/v1/sessions/current"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

async fn me(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .get(app.url("/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

/// Every kind of route refuses `user`'s token: a like, `/v1/me`, an
/// upload, and an optional-auth read.
async fn assert_refused_everywhere(app: &TestApp, user: &TestUser, post: i64) {
    assert_error(
        app.like(user, post).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    assert_error(
        me(app, &user.token).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    assert_error(
        app.upload(Some(&user.token), png(8, 8), "hi").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let read = app
        .client
        .get(app.url("/v1/posts"))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("request");
    assert_error(read, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

/// Polls `check` until it holds or the deadline passes.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "{what} within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_out_revokes_that_session_only(backend: Backend) {
    // A short cache, so that the second node below sees the sign-out soon.
    let app = TestApp::spawn_with(backend, |s| s.auth.session_cache_ms = 200).await;
    let phone = app.user("ann").await;
    let laptop = sign_in(&app, "ann").await;
    let post = app.post(&phone).await;
    assert_eq!(app.like(&laptop, post).await.status(), StatusCode::OK);

    // The contract the binary serves documents it.
    let openapi = app.get_json("/openapi.json").await;
    assert!(
        openapi["paths"]["/v1/sessions/current"]["delete"].is_object(),
        "sign-out in /openapi.json"
    );

    let r = sign_out(&app, &phone.token).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_refused_everywhere(&app, &phone, post).await;
    // Signing out twice: the token is already dead.
    assert_error(
        sign_out(&app, &phone.token).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    // The other session is untouched.
    assert_eq!(app.unlike(&laptop, post).await.status(), StatusCode::OK);
    assert_eq!(me(&app, &laptop.token).await.status(), StatusCode::OK);

    // It survives a restart: the revocation is in the store, not the cache.
    let app = app.restart().await;
    assert_error(
        me(&app, &phone.token).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    assert_eq!(me(&app, &laptop.token).await.status(), StatusCode::OK);

    if backend == Backend::Embedded {
        return;
    }
    // Another node of the same deployment, which checked the laptop's
    // session before its sign-out, refuses it within its cache period.
    let settings = app.settings.clone();
    let other = TestApp::spawn_with(backend, |s| {
        s.redis_url = settings.redis_url.clone();
        s.database_url = settings.database_url.clone();
        s.production.key_prefix = settings.production.key_prefix.clone();
        s.auth.session_cache_ms = 200;
    })
    .await;
    assert_eq!(me(&other, &laptop.token).await.status(), StatusCode::OK);
    assert_eq!(
        sign_out(&app, &laptop.token).await.status(),
        StatusCode::NO_CONTENT
    );
    eventually("the other node refuses the signed-out token", || async {
        me(&other, &laptop.token).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
}

async fn tokens_of_unknown_users_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let author = app.user("bob").await;
    let post = app.post(&author).await;
    // Well signed with this deployment's key, for a user id that does not
    // exist (a leaked key, or a store reset under old tokens).
    let (token, _) = app.state.tokens.issue(987_654, "ghost").expect("issue");
    let ghost = TestUser { id: 987_654, token };
    assert_refused_everywhere(&app, &ghost, post).await;
    assert_eq!(app.get_post(None, post).await["likeCount"], 0);
}

async fn delete_user(app: &TestApp, id: i64) {
    match &app.settings.database_url {
        Some(url) => {
            let pool = sqlx::PgPool::connect(url).await.expect("connect");
            sqlx::query("DELETE FROM users WHERE id = $1")
                .bind(id)
                .execute(&pool)
                .await
                .expect("delete user");
        }
        None => {
            let pool = tally_store::embedded::open(app.data_dir.path())
                .await
                .expect("open the embedded store");
            sqlx::query("DELETE FROM users WHERE id = ?")
                .bind(id)
                .execute(&pool)
                .await
                .expect("delete user");
        }
    }
}

async fn tokens_of_deleted_users_are_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.auth.session_cache_ms = 200).await;
    let author = app.user("cat").await;
    let post = app.post(&author).await;
    let gone = app.user("dan").await;
    assert_eq!(me(&app, &gone.token).await.status(), StatusCode::OK);
    delete_user(&app, gone.id).await;
    eventually("the deleted user's token is refused", || async {
        me(&app, &gone.token).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_refused_everywhere(&app, &gone, post).await;
    assert_eq!(app.like(&author, post).await.status(), StatusCode::OK);
}

/// Within `auth.session_cache_ms` a deleted user's token still passes the
/// session check; the write that names the user must then answer 401, not
/// a 500 from the database's foreign key.
async fn an_upload_by_a_user_deleted_within_the_cache_window_is_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.auth.session_cache_ms = 600_000).await;
    let gone = app.user("eve").await;
    assert_eq!(me(&app, &gone.token).await.status(), StatusCode::OK);
    delete_user(&app, gone.id).await;
    // Still cached as active.
    assert_eq!(me(&app, &gone.token).await.status(), StatusCode::OK);
    let r = app
        .upload(Some(&gone.token), crate::helpers::png(8, 8), "orphan")
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
}

/// `tally keys rotate` as an operator runs it, against this app's store.
fn rotate(app: &TestApp, grace_secs: u64) -> String {
    let out = std::process::Command::new(crate::nodes::BIN)
        .args(["keys", "rotate", "--grace-secs", &grace_secs.to_string()])
        .arg("--data-dir")
        .arg(app.data_dir.path())
        .args(crate::nodes::backend_args(&app.settings))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run tally keys rotate");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tally keys rotate: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The token's header, which names its signing key (`kid`): equal headers,
/// same key.
fn key_of(token: &str) -> String {
    token.split('.').next().unwrap_or_default().to_owned()
}

/// Signs in until the token's key differs from `than`'s (the node reloads
/// its keys every second in these tests).
async fn token_of_a_newer_key(app: &TestApp, username: &str, than: &str) -> TestUser {
    let start = std::time::Instant::now();
    loop {
        let user = sign_in(app, username).await;
        if key_of(&user.token) != key_of(than) {
            return user;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "a new key signs within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn keys_rotate_keeps_old_tokens_for_the_grace_period(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.auth.key_reload_secs = 1).await;
    let old = app.user("eve").await;
    let post = app.post(&old).await;

    let printed = rotate(&app, 3600);
    assert!(printed.contains("signs new tokens"), "{printed}");
    assert!(printed.contains("verifies until"), "{printed}");
    // Once the node reloads its keys, new tokens use the new key, and the
    // old token still works within the grace period.
    let fresh = token_of_a_newer_key(&app, "eve", &old.token).await;
    assert_eq!(app.like(&old, post).await.status(), StatusCode::OK);
    assert_eq!(app.like(&fresh, post).await.status(), StatusCode::OK);
    assert_eq!(me(&app, &old.token).await.status(), StatusCode::OK);

    // A node that has not reloaded its keys since (it reloads hourly)
    // takes the new key's tokens at once: it reloads on an unknown key.
    let mut newest = fresh.clone();
    if backend != Backend::Embedded {
        let settings = app.settings.clone();
        let other = TestApp::spawn_with(backend, |s| {
            s.redis_url = settings.redis_url.clone();
            s.database_url = settings.database_url.clone();
            s.production.key_prefix = settings.production.key_prefix.clone();
            s.auth.key_reload_secs = 3600;
        })
        .await;
        rotate(&app, 3600);
        newest = token_of_a_newer_key(&app, "eve", &fresh.token).await;
        assert_eq!(me(&other, &newest.token).await.status(), StatusCode::OK);
        assert_eq!(me(&other, &old.token).await.status(), StatusCode::OK);
    }

    // Rotating with no grace retires every earlier key: their tokens are
    // refused (a key removed after a leak); tokens of the newest key work.
    rotate(&app, 0);
    let start = std::time::Instant::now();
    while me(&app, &old.token).await.status() != StatusCode::UNAUTHORIZED {
        assert!(
            start.elapsed() < DEADLINE,
            "a retired key's token is refused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_refused_everywhere(&app, &old, post).await;
    assert_refused_everywhere(&app, &newest, post).await;
    let after = token_of_a_newer_key(&app, "eve", &newest.token).await;
    assert_eq!(me(&app, &after.token).await.status(), StatusCode::OK);
    assert_eq!(app.like(&after, post).await.status(), StatusCode::OK);
}
