//! The web client, embedded in the binary so that `tally serve` is all a
//! user needs: no Node, no build step, no second server.
//!
//! The client is plain JavaScript modules under `web/` (see docs/CLIENT.md).
//! Release builds carry the files inside the binary; debug builds read them
//! from `web/` at run time, so editing the client needs no recompile.
//!
//! Caching: file names carry no hash (modules import each other by plain
//! name), so every response has an `ETag` and `Cache-Control: no-cache`:
//! the browser keeps its copy and revalidates it with a conditional request
//! that answers `304` with no body until the binary changes. The files are
//! gzipped for clients that accept it (about a quarter of the bytes on a
//! phone's first visit); the ETag is weak because both encodings share it.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::Embed;
use tower_http::compression::CompressionLayer;

use crate::error::ApiError;

#[derive(Embed)]
#[folder = "web/"]
struct Assets;

/// Where the client's files are served from; `/` serves its `index.html`.
pub const URL_PREFIX: &str = "/app";

/// The page may load only its own scripts and styles, talk only to this
/// origin (HTTP and WebSocket) and show images from here or picked files.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' blob: data:; \
     connect-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; \
     base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route(&format!("{URL_PREFIX}/{{*path}}"), get(asset))
        .layer(CompressionLayer::new())
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, request: &HeaderMap) -> Response {
    // Release builds only know their embedded names; debug builds read the
    // disk, so refuse anything that could climb out of `web/`.
    let file = if path.split('/').any(|part| part == ".." || part.is_empty()) {
        None
    } else {
        Assets::get(path)
    };
    let Some(file) = file else {
        return ApiError::NotFound("no such file".into()).into_response();
    };
    let etag = format!("W/\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let cache = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::ETAG,
            HeaderValue::from_str(&etag).unwrap_or_else(|_| HeaderValue::from_static("\"\"")),
        ),
    ];
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            // Weak comparison: `W/"x"` and `"x"` match.
            let ours = etag.trim_start_matches("W/");
            tags.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == ours || t == "*")
        });
    if fresh {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    let mime = HeaderValue::from_str(file.metadata.mimetype())
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    let mut response = (cache, [(header::CONTENT_TYPE, mime)], file.data).into_response();
    if path.ends_with(".html") {
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    response
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
