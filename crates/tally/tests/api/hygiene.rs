//! Input hygiene (issue 12, defect 3): NUL, control and invisible format
//! characters, invalid UTF-8 and duplicate upload fields get the same 400 on
//! every backend, before any store sees them. A NUL in a sign-in used to
//! answer 500 on PostgreSQL (and 401 on SQLite).

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, TestUser, assert_error, png};

backend_tests!(
    nul_and_controls_in_credentials_are_400,
    bad_captions_are_400_and_nothing_is_stored,
    invalid_utf8_caption_is_400,
    duplicate_upload_fields_are_400,
    good_text_still_passes,
);

async fn sign_in_raw(app: &TestApp, username: &str, password: &str) -> reqwest::Response {
    app.client
        .post(app.url("/v1/sessions"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("request")
}

async fn nul_and_controls_in_credentials_are_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.user("ann").await;
    for name in [
        "ann\0",
        "\0",
        "ann\u{1b}",
        "ann\u{200B}",
        "\u{FEFF}ann",
        "ann\u{7f}",
    ] {
        assert_error(
            sign_in_raw(&app, name, "password123").await,
            StatusCode::BAD_REQUEST,
            "invalid_text",
        )
        .await;
        assert_error(
            app.signup(name, "password123").await,
            StatusCode::BAD_REQUEST,
            "invalid_text",
        )
        .await;
    }
    for password in ["password123\0", "pass\u{1}word123", "password\n123"] {
        assert_error(
            sign_in_raw(&app, "ann", password).await,
            StatusCode::BAD_REQUEST,
            "invalid_text",
        )
        .await;
        assert_error(
            app.signup("bob", password).await,
            StatusCode::BAD_REQUEST,
            "invalid_text",
        )
        .await;
    }
    // Nothing was created, and the real user still signs in.
    assert_eq!(
        app.login("ann", "password123").await.status(),
        StatusCode::OK
    );
    assert_error(
        app.login("bob", "password123").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    // Other text inputs that reach a store: cursors are decoded to numbers
    // first, so a NUL in one is a plain bad cursor.
    for path in [
        "/v1/posts?cursor=%00",
        "/v1/posts?cursor=AA%00",
        "/v1/posts/trending?window=%00",
        "/v1/posts/1/likers?cursor=%00",
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
    }
}

async fn upload_form(app: &TestApp, user: &TestUser, form: Form) -> reqwest::Response {
    app.client
        .post(app.url("/v1/posts"))
        .bearer_auth(&user.token)
        .header("connection", "close")
        .multipart(form)
        .send()
        .await
        .expect("request")
}

fn image_part() -> Part {
    Part::bytes(png(16, 16)).file_name("a.png")
}

async fn feed_len(app: &TestApp) -> usize {
    let feed: Value = app.get_json("/v1/posts").await;
    feed["items"].as_array().expect("items").len()
}

async fn bad_captions_are_400_and_nothing_is_stored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("cat").await;
    for caption in [
        "nul \0 inside",
        "bell \u{7}",
        "escape \u{1b}[31mred",
        "zero\u{200B}width",
        "\u{FEFF}bom",
        "right-to-left \u{202E}override",
    ] {
        assert_error(
            app.upload(Some(&user.token), png(16, 16), caption).await,
            StatusCode::BAD_REQUEST,
            "invalid_text",
        )
        .await;
    }
    assert_eq!(feed_len(&app).await, 0, "no post was stored");
}

async fn invalid_utf8_caption_is_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("dan").await;
    let form = Form::new()
        .part("image", image_part())
        .part("caption", Part::bytes(b"caf\xe9 \xff".to_vec()));
    assert_error(
        upload_form(&app, &user, form).await,
        StatusCode::BAD_REQUEST,
        "invalid_text",
    )
    .await;
    assert_eq!(feed_len(&app).await, 0, "nothing stored lossily");
}

async fn duplicate_upload_fields_are_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("eve").await;
    let two_images = Form::new()
        .part("image", image_part())
        .part("image", Part::bytes(png(20, 20)).file_name("b.png"));
    assert_error(
        upload_form(&app, &user, two_images).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    let two_captions = Form::new()
        .text("caption", "first")
        .part("image", image_part())
        .text("caption", "second");
    assert_error(
        upload_form(&app, &user, two_captions).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    assert_eq!(feed_len(&app).await, 0);
}

async fn good_text_still_passes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("fay").await;
    let caption = "Line one\r\nline two\ttab — café 日本 👨\u{200D}👩\u{200D}👧";
    let form = Form::new()
        .part("image", image_part())
        .part("caption", Part::bytes(caption.as_bytes().to_vec()));
    let r = upload_form(&app, &user, form).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let post: Value = r.json().await.expect("json");
    assert_eq!(post["caption"], caption);
    // A password may hold any printable character, invisible ones too.
    let r = app.signup("gus", "pass\u{200B}word ✓").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        app.login("gus", "pass\u{200B}word ✓").await.status(),
        StatusCode::OK
    );
}
