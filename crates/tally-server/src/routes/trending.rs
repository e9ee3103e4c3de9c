//! `GET /v1/posts/trending`: posts ranked by likes gained in a window,
//! cut into pages from the node's cached ranking (see
//! [`crate::trending`]). Merged into the posts router.

use std::collections::HashMap;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::ApiQuery;
use super::views::{PageParams, PostView};
use crate::auth::MaybeUser;
use crate::cursor::{self, TrendCursor};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use tally_store::domain::PostId;
use tally_store::{PostRecord, Trend, TrendWindow};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(trending_posts))
}

/// `?window&limit&cursor`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrendingParams {
    /// `1h` (default: the last 60 minute buckets) or `24h` (the last 24
    /// hour buckets).
    pub window: Option<String>,
    /// 1–100, default 20.
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page (of the same window).
    pub cursor: Option<String>,
}

/// A post of the ranking: the feed's post view plus its score.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrendingPost {
    #[serde(flatten)]
    pub post: PostView,
    /// Likes minus unlikes in the window (always > 0).
    pub score: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrendingPage {
    /// The window ranked (`1h` or `24h`).
    pub window: &'static str,
    /// Best first: higher score, then lower id.
    pub items: Vec<TrendingPost>,
    /// Absent on the last page.
    pub next_cursor: Option<String>,
}

/// Trending posts: ranked by likes gained in the window, keyset-paginated.
#[utoipa::path(get, path = "/v1/posts/trending", tag = "posts", params(TrendingParams),
    responses(
        (status = 200, body = TrendingPage),
        (status = 400, body = ErrorBody, description = "`invalid_request`: bad window, limit or cursor"),
        (status = 401, body = ErrorBody, description = "`unauthorized`: a token was sent and refused (expired, signed out, its user gone); send none to read anonymously"),
        (status = 503, body = ErrorBody, description = "`unavailable`: the ranking cannot be computed now (Redis unreachable)"),
    ))]
async fn trending_posts(
    State(state): State<AppState>,
    MaybeUser(viewer): MaybeUser,
    ApiQuery(params): ApiQuery<TrendingParams>,
) -> Result<axum::Json<TrendingPage>, ApiError> {
    let window: TrendWindow = params
        .window
        .as_deref()
        .unwrap_or("1h")
        .parse()
        .map_err(|e: tally_store::trending::UnknownWindow| ApiError::invalid(e.to_string()))?;
    let limit = PageParams {
        limit: params.limit,
        cursor: None,
    }
    .limit()? as usize;
    let after = params
        .cursor
        .as_deref()
        .map(|c| {
            cursor::decode_trend(c)
                .filter(|c| c.window == window)
                .ok_or_else(|| ApiError::invalid("invalid cursor"))
        })
        .transpose()?;

    let ranking = state.trending.ranking(state.likes.as_ref(), window).await?;
    let mut at = after.map_or(0, |c| {
        let key = Trend {
            post: c.post,
            score: c.score,
        }
        .rank_key();
        ranking.partition_point(|t| t.rank_key() <= key)
    });
    // Cut the page, skipping posts the catalog does not have (deleted or
    // unknown): look up what is still missing until the page is full.
    let mut page: Vec<(PostRecord, i64)> = Vec::with_capacity(limit);
    while page.len() < limit && at < ranking.len() {
        let batch = &ranking[at..ranking.len().min(at + limit - page.len())];
        at += batch.len();
        let ids: Vec<PostId> = batch.iter().map(|t| t.post).collect();
        let mut found: HashMap<PostId, PostRecord> = state
            .catalog
            .posts_by_ids(&ids)
            .await?
            .into_iter()
            .map(|p| (p.id, p))
            .collect();
        page.extend(
            batch
                .iter()
                .filter_map(|t| found.remove(&t.post).map(|p| (p, t.score))),
        );
    }
    // The last position consumed, shown or skipped.
    let next_cursor = at
        .checked_sub(1)
        .and_then(|i| ranking.get(i))
        .filter(|_| at < ranking.len())
        .map(|last| {
            cursor::encode_trend(TrendCursor {
                window,
                score: last.score,
                post: last.post,
            })
        });
    let ids: Vec<PostId> = page.iter().map(|(p, _)| p.id).collect();
    let likes = state.likes.states(&ids, viewer).await?;
    let items = page
        .into_iter()
        .zip(likes)
        .map(|((post, score), likes)| TrendingPost {
            post: PostView::new(post, likes),
            score,
        })
        .collect();
    Ok(axum::Json(TrendingPage {
        window: window.as_str(),
        items,
        next_cursor,
    }))
}
