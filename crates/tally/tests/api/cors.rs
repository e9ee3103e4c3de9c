//! Cross-origin access (issue 13): off by default; with
//! `cors.allowed_origins` set, exactly those origins get preflights
//! answered and answers marked readable (API, OpenAPI, Socket.io polling),
//! never with credentials; a bad origin stops the node from starting.

use reqwest::header::{self, HeaderMap};
use reqwest::{Method, Response};
use tally_server::config::Settings;
use tally_server::startup::Application;

use crate::helpers::{Backend, TestApp};

const APP_ORIGIN: &str = "http://127.0.0.1:19006";
const OTHER_ORIGIN: &str = "https://evil.example";

async fn app_with_origins(origins: &[&str]) -> TestApp {
    let origins: Vec<String> = origins.iter().map(|o| (*o).to_owned()).collect();
    TestApp::spawn_with(Backend::Embedded, |s| {
        s.cors.allowed_origins = origins;
        // One sign-in attempt per minute: preflights must not spend it.
        s.rate_limits.auth_per_min_per_ip = 1;
    })
    .await
}

async fn preflight(app: &TestApp, path: &str, origin: &str, method: &str) -> Response {
    app.client
        .request(Method::OPTIONS, app.url(path))
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, method)
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,idempotency-key",
        )
        .send()
        .await
        .expect("preflight")
}

async fn get_from(app: &TestApp, path: &str, origin: &str) -> Response {
    app.client
        .get(app.url(path))
        .header(header::ORIGIN, origin)
        .send()
        .await
        .expect("request")
}

fn value(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(&name)
        .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
        .to_str()
        .expect("ascii")
}

fn no_cors_headers(headers: &HeaderMap) {
    for (name, _) in headers {
        assert!(
            !name.as_str().starts_with("access-control-"),
            "unexpected {name} in {headers:?}"
        );
    }
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn off_by_default_no_cors_headers() {
    let app = TestApp::spawn(Backend::Embedded).await;
    let get = get_from(&app, "/v1/posts", APP_ORIGIN).await;
    no_cors_headers(get.headers());
    let pre = preflight(&app, "/v1/posts/1/like", APP_ORIGIN, "PUT").await;
    no_cors_headers(pre.headers());
    // Today's answer to an OPTIONS: not allowed.
    assert_eq!(pre.status(), reqwest::StatusCode::METHOD_NOT_ALLOWED);
    let poll = get_from(&app, "/socket.io/?EIO=4&transport=polling", APP_ORIGIN).await;
    assert!(poll.status().is_success(), "{}", poll.status());
    no_cors_headers(poll.headers());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allowed_origin_preflight_of_an_authenticated_write() {
    let app = app_with_origins(&[APP_ORIGIN, "https://other.example"]).await;
    // More preflights than the sign-in budget allows: none is refused or
    // counted, and none needs a token.
    for _ in 0..5 {
        let pre = preflight(&app, "/v1/posts/1/like", APP_ORIGIN, "PUT").await;
        assert!(pre.status().is_success(), "{}", pre.status());
        let h = pre.headers();
        assert_eq!(value(h, header::ACCESS_CONTROL_ALLOW_ORIGIN), APP_ORIGIN);
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
        let methods = list(value(h, header::ACCESS_CONTROL_ALLOW_METHODS));
        for m in ["get", "post", "put", "delete", "options"] {
            assert!(methods.iter().any(|x| x == m), "{m} not in {methods:?}");
        }
        let allowed = list(value(h, header::ACCESS_CONTROL_ALLOW_HEADERS));
        for name in ["authorization", "content-type", "idempotency-key"] {
            assert!(
                allowed.iter().any(|x| x == name),
                "{name} not in {allowed:?}"
            );
        }
        assert_eq!(value(h, header::ACCESS_CONTROL_MAX_AGE), "600");
        let pre = preflight(&app, "/v1/sessions", APP_ORIGIN, "POST").await;
        assert!(pre.status().is_success(), "{}", pre.status());
    }
    // The one sign-in attempt the per-IP budget allows is still there
    // (an unknown user: 401, not 429), and the next is limited.
    let login = app.login("nobody", "password123").await;
    assert_eq!(login.status(), reqwest::StatusCode::UNAUTHORIZED);
    let login = app.login("nobody", "password123").await;
    assert_eq!(login.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    // Preflights still answer while the budget is spent.
    let pre = preflight(&app, "/v1/sessions", APP_ORIGIN, "POST").await;
    assert!(pre.status().is_success(), "{}", pre.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allowed_origin_reads_api_openapi_and_socketio_polling() {
    let app = app_with_origins(&[APP_ORIGIN]).await;
    for path in [
        "/v1/posts",
        "/openapi.json",
        "/socket.io/?EIO=4&transport=polling",
    ] {
        let res = get_from(&app, path, APP_ORIGIN).await;
        assert!(res.status().is_success(), "{path}: {}", res.status());
        let h = res.headers();
        assert_eq!(
            value(h, header::ACCESS_CONTROL_ALLOW_ORIGIN),
            APP_ORIGIN,
            "{path}"
        );
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
        assert!(
            list(value(h, header::ACCESS_CONTROL_EXPOSE_HEADERS)).contains(&"retry-after".into())
        );
        // Other headers still there (the layer sits inside Referrer-Policy).
        assert_eq!(value(h, header::REFERRER_POLICY), "no-referrer");
    }
    // An error answer (401 without a token) is readable too.
    let res = app
        .client
        .put(app.url("/v1/posts/1/like"))
        .header(header::ORIGIN, APP_ORIGIN)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), reqwest::StatusCode::UNAUTHORIZED);
    assert_eq!(
        value(res.headers(), header::ACCESS_CONTROL_ALLOW_ORIGIN),
        APP_ORIGIN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_origin_gets_no_allow_origin_and_no_403() {
    let app = app_with_origins(&[APP_ORIGIN]).await;
    let get = get_from(&app, "/v1/posts", OTHER_ORIGIN).await;
    assert!(get.status().is_success(), "{}", get.status());
    assert!(
        get.headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
    let pre = preflight(&app, "/v1/posts/1/like", OTHER_ORIGIN, "PUT").await;
    assert_ne!(pre.status(), reqwest::StatusCode::FORBIDDEN);
    assert!(
        pre.headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
    let poll = get_from(&app, "/socket.io/?EIO=4&transport=polling", OTHER_ORIGIN).await;
    assert!(
        poll.headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
    // No Origin at all (curl, the mobile app's native build): as before.
    let plain = app
        .client
        .get(app.url("/v1/posts"))
        .send()
        .await
        .expect("request");
    assert!(plain.status().is_success());
    assert!(
        plain
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_origin_stops_the_start() {
    for (bad, why) in [
        ("not a url", "is not an origin"),
        ("http://127.0.0.1:19006/app", "has a path"),
        ("*", "is not accepted"),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = Settings::for_tests(dir.path().to_path_buf());
        settings.cors.allowed_origins = vec![APP_ORIGIN.into(), bad.into()];
        let message = match Application::build(settings).await {
            Ok(_) => panic!("{bad:?} was accepted"),
            Err(err) => err.to_string(),
        };
        assert!(
            message.starts_with("configuration: cors.allowed_origins: "),
            "{message}"
        );
        assert!(message.contains(bad) && message.contains(why), "{message}");
    }
}
