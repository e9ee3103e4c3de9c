//! Like, unlike, toggle, and who liked.
//!
//! Every answer carries the count's version (docs/LIVE.md, "Versions"), so
//! a client orders it against live pushes. The toggle takes an
//! `Idempotency-Key`: flipping is the one operation whose retry is not
//! harmless.

use axum::extract::State;
use axum::http::HeaderMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{ApiPath, ApiQuery};
use super::views::{LikeView, LikerPage, LikerView, PageParams, rfc3339_ms};
use crate::auth::AuthUser;
use crate::cursor;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use tally_store::domain::{IdempotencyKey, PostId};
use tally_store::{LikeOp, LikerCursor};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(like, unlike))
        .routes(routes!(toggle))
        .routes(routes!(likers))
}

/// The request header that makes a toggle's retry safe.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

async fn apply(
    state: &AppState,
    user: AuthUser,
    post: PostId,
    op: LikeOp,
    key: Option<IdempotencyKey>,
) -> Result<axum::Json<LikeView>, ApiError> {
    state.limits.check_user_write(user.id)?;
    let outcome = match (op, key) {
        (LikeOp::Toggle, Some(key)) => state.likes.toggle_once(post, user.id, &key).await?,
        _ => state.likes.apply(post, user.id, op).await?,
    };
    // Counted here, once for every backend and path (fallback included).
    let changed = if outcome.changed { "true" } else { "false" };
    metrics::counter!("tally_like_ops_total", "op" => op.as_str(), "changed" => changed)
        .increment(1);
    Ok(axum::Json(LikeView {
        liked: outcome.liked,
        like_count: outcome.count,
        version: outcome.version,
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
    apply(&state, user, id, LikeOp::Like, None).await
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
    apply(&state, user, id, LikeOp::Unlike, None).await
}

/// Flip the caller's like. Not idempotent by itself: send an
/// `Idempotency-Key` to retry safely (a repeat of the key answers what the
/// first request did), or prefer PUT/DELETE.
#[utoipa::path(post, path = "/v1/posts/{id}/like/toggle", tag = "likes",
    params(
        ("id" = i64, Path, description = "Post id"),
        ("Idempotency-Key" = Option<String>, Header,
            description = "1–64 characters of `A-Z a-z 0-9 - _` (a UUID fits), chosen by the client per intended flip. A repeat with the same key, by the same user on the same post, within the retention (`likes.idempotency_retention_secs`, default 10 min) answers what the first request did instead of flipping again."),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, body = LikeView),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a malformed `Idempotency-Key`"),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
        (status = 404, body = ErrorBody, description = "`not_found`"),
        (status = 429, body = ErrorBody, description = "`rate_limited`"),
        (status = 503, body = ErrorBody, description = "`unavailable`: not acknowledged; retry with the same key"),
    ))]
async fn toggle(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<PostId>,
    headers: HeaderMap,
) -> Result<axum::Json<LikeView>, ApiError> {
    let key = idempotency_key(&headers)?;
    apply(&state, user, id, LikeOp::Toggle, key).await
}

/// The `Idempotency-Key` header, if sent; 400 if malformed or repeated.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::invalid("send one Idempotency-Key header"));
    }
    let raw = value
        .to_str()
        .map_err(|_| ApiError::invalid("Idempotency-Key must be ASCII"))?;
    IdempotencyKey::parse(raw)
        .map(Some)
        .map_err(ApiError::invalid)
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
