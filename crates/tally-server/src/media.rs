//! Where image files live: a directory under the data dir, served at
//! `/media/{file}`. Names are random, so they are unguessable before a post
//! is public and never collide between nodes sharing a volume.
//!
//! Serving: only names this store makes (`{hex}.{ext}`, `{hex}_t.jpg`) are
//! looked up, one file, never a directory: no redirect (`/media/.` once
//! redirected out of `/media`), no temporary `.{name}.tmp` file. Files are
//! cached for ever (names are never reused); a miss is a JSON 404 that no
//! cache keeps.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rand::RngCore;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::error::ApiError;
use crate::state::AppState;

/// URL prefix under which media files are served.
pub const URL_PREFIX: &str = "/media";

#[derive(Debug, Clone)]
pub struct MediaStore {
    dir: PathBuf,
}

impl MediaStore {
    pub async fn open(dir: PathBuf) -> std::io::Result<Self> {
        tokio::fs::create_dir_all(&dir).await?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A fresh random file stem.
    pub fn new_stem() -> String {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Writes a file atomically (temp file, fsync, rename), so a crash never
    /// leaves a half-written image behind a post.
    pub async fn put(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut file = tokio::fs::File::create(&tmp).await?;
        tokio::io::AsyncWriteExt::write_all(&mut file, bytes).await?;
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&tmp, self.dir.join(name)).await
    }

    /// Removes a file, ignoring one that is already gone.
    pub async fn remove(&self, name: &str) {
        if let Err(err) = tokio::fs::remove_file(self.dir.join(name)).await
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %err, file = name, "could not remove media file");
        }
    }

    pub fn url(name: &str) -> String {
        format!("{URL_PREFIX}/{name}")
    }
}

/// `GET /media/{file}` (nested under [`URL_PREFIX`]).
pub fn router() -> Router<AppState> {
    Router::new().route("/{file}", get(file))
}

/// A name [`MediaStore`] could have made: letters, digits, `_`, `-` and
/// dots, not starting with a dot, short.
fn is_media_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

async fn file(
    State(state): State<AppState>,
    name: Result<UrlPath<String>, axum::extract::rejection::PathRejection>,
    request: Request,
) -> Response {
    let not_found = || ApiError::NotFound("no such file".into()).into_response();
    let Ok(UrlPath(name)) = name else {
        return not_found();
    };
    if !is_media_name(&name) {
        return not_found();
    }
    let served = ServeFile::new(state.media.dir().join(&name))
        .oneshot(request)
        .await;
    let Ok(response) = served;
    match response.status() {
        StatusCode::NOT_FOUND => not_found(),
        status if status.is_success() || status == StatusCode::NOT_MODIFIED => {
            let mut response = response.map(axum::body::Body::new);
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            );
            response
        }
        _ => response.map(axum::body::Body::new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_store_made_names_are_served() {
        let stem = MediaStore::new_stem();
        assert!(is_media_name(&format!("{stem}.webp")));
        assert!(is_media_name(&format!("{stem}_t.jpg")));
        for bad in ["", ".", "..", ".abc.tmp", "a/b", "a%2Fb", &"a".repeat(200)] {
            assert!(!is_media_name(bad), "{bad:?}");
        }
    }
}
