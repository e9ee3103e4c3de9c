//! Like, unlike, toggle, and who liked.

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{ApiPath, ApiQuery};
use super::views::{LikeView, LikerPage, LikerView, PageParams, rfc3339_ms};
use crate::auth::AuthUser;
use crate::cursor;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use tally_store::domain::PostId;
use tally_store::{LikeOp, LikerCursor};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(like, unlike))
        .routes(routes!(toggle))
        .routes(routes!(likers))
}

async fn apply(
    state: &AppState,
    user: AuthUser,
    post: PostId,
    op: LikeOp,
) -> Result<axum::Json<LikeView>, ApiError> {
    state.limits.check_user_write(user.id)?;
    let outcome = state.likes.apply(post, user.id, op).await?;
    // Counted here, once for every backend and path (fallback included).
    let changed = if outcome.changed { "true" } else { "false" };
    metrics::counter!("tally_like_ops_total", "op" => op.as_str(), "changed" => changed)
        .increment(1);
    Ok(axum::Json(LikeView {
        liked: outcome.liked,
        like_count: outcome.count,
    }))
}

/// Like a post. Idempotent; `likeCount` is the count after this call.
#[utoipa::path(put, path = "/v1/posts/{id}/like", tag = "likes",
    params(("id" = i64, Path, description = "Post id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = LikeView),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
        (status = 404, body = ErrorBody, description = "`not_found`"),
        (status = 429, body = ErrorBody, description = "`rate_limited`"),
        (status = 503, body = ErrorBody, description = "`unavailable`: not acknowledged; read the state back"),
    ))]
async fn like(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<PostId>,
) -> Result<axum::Json<LikeView>, ApiError> {
    apply(&state, user, id, LikeOp::Like).await
}

/// Unlike a post. Idempotent; `likeCount` is the count after this call.
#[utoipa::path(delete, path = "/v1/posts/{id}/like", tag = "likes",
    params(("id" = i64, Path, description = "Post id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = LikeView),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
        (status = 404, body = ErrorBody, description = "`not_found`"),
    ))]
async fn unlike(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<PostId>,
) -> Result<axum::Json<LikeView>, ApiError> {
    apply(&state, user, id, LikeOp::Unlike).await
}

/// Flip the caller's like. Not idempotent: prefer PUT/DELETE when retrying.
#[utoipa::path(post, path = "/v1/posts/{id}/like/toggle", tag = "likes",
    params(("id" = i64, Path, description = "Post id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = LikeView),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
        (status = 404, body = ErrorBody, description = "`not_found`"),
    ))]
async fn toggle(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<PostId>,
) -> Result<axum::Json<LikeView>, ApiError> {
    apply(&state, user, id, LikeOp::Toggle).await
}

/// Who liked a post, most recent first.
#[utoipa::path(get, path = "/v1/posts/{id}/likers", tag = "likes",
    params(("id" = i64, Path, description = "Post id"), PageParams),
    responses(
        (status = 200, body = LikerPage),
        (status = 400, body = ErrorBody, description = "`invalid_request`"),
        (status = 404, body = ErrorBody, description = "`not_found`"),
    ))]
async fn likers(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<PostId>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<axum::Json<LikerPage>, ApiError> {
    let limit = page.limit()?;
    let after = page
        .cursor
        .as_deref()
        .map(|c| cursor::decode_liker(c).ok_or_else(|| ApiError::invalid("invalid cursor")))
        .transpose()?;
    if state.catalog.post(id).await?.is_none() {
        return Err(ApiError::NotFound(format!("post {id} not found")));
    }
    let mut likers = state.catalog.likers_page(id, after, limit + 1).await?;
    let more = likers.len() > limit as usize;
    likers.truncate(limit as usize);
    let next_cursor = more
        .then(|| {
            likers.last().map(|l| {
                cursor::encode_liker(LikerCursor {
                    liked_at_ms: l.liked_at_ms,
                    user_id: l.user.id,
                })
            })
        })
        .flatten();
    let items = likers
        .into_iter()
        .map(|l| LikerView {
            id: l.user.id,
            username: l.user.username,
            liked_at: rfc3339_ms(l.liked_at_ms),
        })
        .collect();
    Ok(axum::Json(LikerPage { items, next_cursor }))
}
