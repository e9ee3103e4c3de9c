//! Image posts: upload, feed, one post.

use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{ApiPath, ApiQuery};
use super::views::{PageParams, PostPage, PostView};
use crate::auth::{AuthUser, MaybeUser};
use crate::cursor;
use crate::error::{ApiError, ErrorBody};
use crate::images::{self, ImageError};
use crate::media::MediaStore;
use crate::state::AppState;
use crate::text;
use tally_store::NewPost;
use tally_store::domain::{MAX_CAPTION_CHARS, PostId};

/// Room for the multipart framing and the caption around the image.
const MULTIPART_OVERHEAD: usize = 64 * 1024;

pub fn router(max_upload_bytes: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_post, list_posts))
        // Only this route takes large bodies; everything else keeps the
        // small JSON limit set in `routes::router`.
        .layer(DefaultBodyLimit::max(max_upload_bytes + MULTIPART_OVERHEAD))
        .routes(routes!(get_post))
}

/// The multipart form of an upload (for the OpenAPI document).
#[derive(ToSchema)]
#[allow(dead_code)]
struct UploadForm {
    /// JPEG, PNG, WebP or GIF.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    /// Up to 2,200 characters.
    caption: Option<String>,
}

/// Upload an image post.
#[utoipa::path(post, path = "/v1/posts", tag = "posts",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    security(("bearer" = [])),
    responses(
        (status = 201, body = PostView),
        (status = 400, body = ErrorBody, description = "`invalid_request`: missing image, a field sent twice, caption too long; `invalid_text`: caption not UTF-8, or with NUL, control or invisible format characters"),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
        (status = 413, body = ErrorBody, description = "`payload_too_large`: file or pixel count over the limit"),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: not a JPEG, PNG, WebP or GIF"),
        (status = 422, body = ErrorBody, description = "`invalid_image`: the file does not decode"),
        (status = 429, body = ErrorBody, description = "`rate_limited`"),
    ))]
async fn create_post(
    State(state): State<AppState>,
    user: AuthUser,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, axum::Json<PostView>), ApiError> {
    state.limits.check_user_write(user.id)?;
    let mut multipart = multipart.map_err(|_| {
        ApiError::UnsupportedMediaType("expected multipart/form-data with an `image` field".into())
    })?;
    let mut image = None;
    let mut caption = None;
    while let Some(field) = multipart.next_field().await? {
        match field.name() {
            Some("image") => once(&mut image, "image", field.bytes().await?)?,
            // Bytes, not `text()`: that replaces invalid UTF-8 silently.
            Some("caption") => once(
                &mut caption,
                "caption",
                text::decode(text::Kind::Caption, &field.bytes().await?)?,
            )?,
            _ => {}
        }
    }
    let image = image.ok_or_else(|| ApiError::invalid("the `image` field is required"))?;
    let caption = caption.unwrap_or_default();
    if caption.chars().count() > MAX_CAPTION_CHARS {
        return Err(ApiError::invalid(format!(
            "caption is longer than {MAX_CAPTION_CHARS} characters"
        )));
    }
    let caption = caption.trim().to_owned();

    let processed = {
        // Bound concurrent decodes: each may take a core and hundreds of MB.
        let _slot = state
            .image_slots
            .acquire()
            .await
            .map_err(ApiError::internal)?;
        let limits = state.settings.image_limits();
        let bytes = image.clone();
        tokio::task::spawn_blocking(move || images::process(&bytes, limits))
            .await
            .map_err(ApiError::internal)?
    }
    .map_err(|e| match e {
        ImageError::Unsupported => ApiError::UnsupportedMediaType(e.to_string()),
        ImageError::TooManyPixels { .. } => ApiError::PayloadTooLarge(e.to_string()),
        ImageError::Malformed(_) => ApiError::UnprocessableImage(e.to_string()),
    })?;

    let stem = MediaStore::new_stem();
    let image_file = format!("{stem}.{}", processed.extension());
    let thumb_file = format!("{stem}_t.jpg");
    state
        .media
        .put(&image_file, &image)
        .await
        .map_err(ApiError::internal)?;
    if let Err(err) = state.media.put(&thumb_file, &processed.thumbnail).await {
        state.media.remove(&image_file).await;
        return Err(ApiError::internal(err));
    }
    let created = state
        .catalog
        .create_post(NewPost {
            author: user.id,
            caption,
            image_file: image_file.clone(),
            thumb_file: thumb_file.clone(),
            width: processed.width,
            height: processed.height,
        })
        .await;
    let post = match created {
        Ok(post) => post,
        Err(err) => {
            state.media.remove(&image_file).await;
            state.media.remove(&thumb_file).await;
            return Err(err.into());
        }
    };
    tracing::info!(
        post = post.id,
        user = user.id,
        bytes = image.len(),
        "post created"
    );
    let likes = state.likes.states(&[post.id], Some(user.id)).await?;
    let view = PostView::new(post, likes[0]);
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// Sets a form field that may appear once: a second `image` or `caption`
/// is refused rather than silently replacing the first.
fn once<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<(), ApiError> {
    if slot.replace(value).is_some() {
        return Err(ApiError::invalid(format!(
            "the `{name}` field appears more than once"
        )));
    }
    Ok(())
}

/// The feed: newest first, keyset-paginated.
#[utoipa::path(get, path = "/v1/posts", tag = "posts", params(PageParams),
    responses(
        (status = 200, body = PostPage),
        (status = 400, body = ErrorBody, description = "`invalid_request`: bad limit or cursor"),
        (status = 401, body = ErrorBody, description = "`unauthorized`: a token was sent and refused (expired, signed out, its user gone); send none to read anonymously"),
    ))]
async fn list_posts(
    State(state): State<AppState>,
    MaybeUser(viewer): MaybeUser,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<axum::Json<PostPage>, ApiError> {
    let limit = page.limit()?;
    let before = page
        .cursor
        .as_deref()
        .map(|c| cursor::decode_post(c).ok_or_else(|| ApiError::invalid("invalid cursor")))
        .transpose()?;
    let mut posts = state.catalog.posts_page(before, limit + 1).await?;
    let more = posts.len() > limit as usize;
    posts.truncate(limit as usize);
    let ids: Vec<PostId> = posts.iter().map(|p| p.id).collect();
    let likes = state.likes.states(&ids, viewer).await?;
    let next_cursor = more
        .then(|| posts.last().map(|p| cursor::encode_post(p.id)))
        .flatten();
    let items = posts
        .into_iter()
        .zip(likes)
        .map(|(post, likes)| PostView::new(post, likes))
        .collect();
    Ok(axum::Json(PostPage { items, next_cursor }))
}

/// One post.
#[utoipa::path(get, path = "/v1/posts/{id}", tag = "posts",
    params(("id" = i64, Path, description = "Post id")),
    responses(
        (status = 200, body = PostView),
        (status = 401, body = ErrorBody, description = "`unauthorized`: a token was sent and refused (expired, signed out, its user gone); send none to read anonymously"),
        (status = 404, body = ErrorBody, description = "`not_found`"),
    ))]
async fn get_post(
    State(state): State<AppState>,
    MaybeUser(viewer): MaybeUser,
    ApiPath(id): ApiPath<PostId>,
) -> Result<axum::Json<PostView>, ApiError> {
    let post = state
        .catalog
        .post(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("post {id} not found")))?;
    let likes = state.likes.states(&[id], viewer).await?;
    Ok(axum::Json(PostView::new(post, likes[0])))
}
