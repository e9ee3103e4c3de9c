//! The web client's files as a browser fetches them: the page with its
//! security policy, modules with the right types, revalidation by ETag.
//! (What the client does is tested in a real browser: tests/js.)

use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH};

use crate::helpers::{Backend, TestApp, assert_error};

#[tokio::test]
async fn client_is_served_with_caching_and_a_content_security_policy() {
    let app = TestApp::spawn(Backend::Embedded).await;
    let page = app.get("/").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(page.headers()[CACHE_CONTROL], "no-cache");
    let csp = page.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("/app/js/main.js"), "{html}");
    // Every module is preloaded (no import waterfall) and every preload exists.
    let preloaded: Vec<&str> = html
        .split("<link rel=\"modulepreload\" href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    let modules = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tally-server/web/js"
    ))
    .unwrap();
    for module in modules {
        let name = module.unwrap().file_name().into_string().unwrap();
        let url = format!("/app/js/{name}");
        assert!(
            name == "main.js" || preloaded.contains(&url.as_str()),
            "{url} is not preloaded"
        );
    }
    for url in preloaded {
        assert_eq!(app.get(url).await.status(), StatusCode::OK, "{url}");
    }

    let module = app.get("/app/js/main.js").await;
    assert_eq!(module.status(), StatusCode::OK);
    assert!(
        module.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .contains("javascript"),
        "{:?}",
        module.headers()
    );
    let etag = module.headers()[ETAG].clone();
    let again = app
        .client
        .get(app.url("/app/js/main.js"))
        .header(IF_NONE_MATCH, etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()[ETAG], etag);
    assert!(again.text().await.unwrap().is_empty());
    let gzipped = app
        .client
        .get(app.url("/app/js/main.js"))
        .header(reqwest::header::ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzipped.headers()[reqwest::header::CONTENT_ENCODING], "gzip");
    let css = app.get("/app/app.css").await;
    assert!(
        css.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );

    for missing in ["/app/nope.js", "/app/", "/app/js/"] {
        assert_error(app.get(missing).await, StatusCode::NOT_FOUND, "not_found").await;
    }
    // HTTP clients resolve `..` before sending; a raw request does not.
    for path in [
        "/app/../Cargo.toml",
        "/app/js/../../src/lib.rs",
        "/app/%2e%2e/Cargo.toml",
    ] {
        let head = raw_get(&app, path).await;
        assert!(head.starts_with("HTTP/1.1 404"), "{path}: {head}");
    }
}

async fn raw_get(app: &TestApp, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}
