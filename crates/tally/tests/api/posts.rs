//! Uploads, media, the feed and one post.

use image::ImageFormat;
use reqwest::StatusCode;
use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, assert_error, encode, png, png_header_only};

backend_tests!(
    upload_and_fetch_a_post,
    uploads_accept_each_format,
    uploads_reject_bad_images,
    upload_size_is_limited,
    feed_pages_newest_first,
    bad_pagination_and_unknown_posts,
);

async fn upload_and_fetch_a_post(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("poster").await;
    let r = app.upload(Some(&user.token), png(1, 1), "  tiny  ").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let post: Value = r.json().await.unwrap();
    assert_eq!(post["caption"], "tiny");
    assert_eq!(post["width"], 1);
    assert_eq!(post["height"], 1);
    assert_eq!(post["author"]["username"], "poster");
    assert_eq!(post["likeCount"], 0);
    assert_eq!(post["likedByMe"], false);
    assert!(post["createdAt"].as_str().unwrap().ends_with('Z'));

    let id = post["id"].as_i64().unwrap();
    assert_eq!(app.get_post(None, id).await, post);

    let original = app.get(post["imageUrl"].as_str().unwrap()).await;
    assert_eq!(original.status(), StatusCode::OK);
    assert_eq!(original.headers()["content-type"], "image/png");
    assert!(
        original.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(original.bytes().await.unwrap().to_vec(), png(1, 1));

    let thumb = app.get(post["thumbnailUrl"].as_str().unwrap()).await;
    assert_eq!(thumb.headers()["content-type"], "image/jpeg");
    let thumb = image::load_from_memory(&thumb.bytes().await.unwrap()).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (1, 1));
}

async fn uploads_accept_each_format(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("formats").await;
    for (format, mime) in [
        (ImageFormat::Jpeg, "image/jpeg"),
        (ImageFormat::Png, "image/png"),
        (ImageFormat::WebP, "image/webp"),
        (ImageFormat::Gif, "image/gif"),
    ] {
        let r = app
            .upload(Some(&user.token), encode(1600, 900, format), "wide")
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{format:?}");
        let post: Value = r.json().await.unwrap();
        assert_eq!(
            (post["width"].as_u64(), post["height"].as_u64()),
            (Some(1600), Some(900))
        );
        let original = app.get(post["imageUrl"].as_str().unwrap()).await;
        assert_eq!(original.headers()["content-type"], mime);
        let thumb = app.get(post["thumbnailUrl"].as_str().unwrap()).await;
        let thumb = image::load_from_memory(&thumb.bytes().await.unwrap()).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (640, 360), "{format:?}");
    }
}

async fn uploads_reject_bad_images(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("badimages").await;
    let t = Some(user.token.as_str());

    assert_error(
        app.upload(t, b"just some text".to_vec(), "").await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    // A 100k × 100k PNG header: rejected before any pixel is decoded.
    assert_error(
        app.upload(t, png_header_only(100_000, 100_000), "").await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    let mut truncated = png(200, 200);
    truncated.truncate(truncated.len() / 2);
    assert_error(
        app.upload(t, truncated, "").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_image",
    )
    .await;
    assert_error(
        app.upload(None, png(1, 1), "").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    assert_error(
        app.upload(t, png(1, 1), &"c".repeat(2201)).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;

    let no_image = reqwest::multipart::Form::new().text("caption", "no image");
    let r = app
        .client
        .post(app.url("/v1/posts"))
        .bearer_auth(&user.token)
        .multipart(no_image)
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;

    let json = app
        .client
        .post(app.url("/v1/posts"))
        .bearer_auth(&user.token)
        .json(&serde_json::json!({"image": "x"}))
        .send()
        .await
        .unwrap();
    assert_error(
        json,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    // Nothing was stored for any of them.
    let feed: Value = app.get_json("/v1/posts").await;
    assert_eq!(feed["items"].as_array().unwrap().len(), 0);
    let files = std::fs::read_dir(app.data_dir.path().join("media"))
        .unwrap()
        .count();
    assert_eq!(files, 0);
}

async fn upload_size_is_limited(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.max_upload_bytes = 100_000).await;
    let user = app.user("bigfile").await;
    let big = vec![0u8; 400_000];
    assert_error(
        app.upload(Some(&user.token), big, "").await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    assert_eq!(
        app.upload(Some(&user.token), png(10, 10), "")
            .await
            .status(),
        StatusCode::CREATED
    );
}

async fn feed_pages_newest_first(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("feeder").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.post(&user).await);
    }
    app.like(&user, ids[1]).await;
    ids.reverse();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = app.url("/v1/posts?limit=2");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = app
            .client
            .get(url)
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            let id = item["id"].as_i64().unwrap();
            let liked = id == ids[3];
            assert_eq!(item["likeCount"], if liked { 1 } else { 0 });
            assert_eq!(item["likedByMe"], liked);
            seen.push(id);
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);

    let anonymous: Value = app.get_json("/v1/posts").await;
    assert_eq!(anonymous["items"].as_array().unwrap().len(), 5);
    assert!(
        anonymous["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["likedByMe"] == false)
    );
    assert!(anonymous["nextCursor"].is_null());
}

async fn bad_pagination_and_unknown_posts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for query in [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=abc",
        "cursor=%21%21",
        "cursor=bDoxOjE",
    ] {
        let r = app.get(&format!("/v1/posts?{query}")).await;
        assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let r = app.get("/v1/posts/999").await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = app.get("/v1/posts/abc").await;
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    let r = app.get("/v1/posts/99999999999999999999999").await;
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    let r = app.get("/v1/posts/999/likers").await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
}
