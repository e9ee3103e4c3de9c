//! The JSON shapes of the API (camelCase, integer ids) and their conversion
//! from store records. Request and response types of a single endpoint sit
//! with its handler; shared ones live here.

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::media::MediaStore;
use tally_store::{LikeState, PostRecord, User};

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: i64,
    pub username: String,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            username: u.username,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostView {
    pub id: i64,
    pub author: UserView,
    pub caption: String,
    pub image_url: String,
    pub thumbnail_url: String,
    pub width: u32,
    pub height: u32,
    /// RFC 3339.
    pub created_at: String,
    pub like_count: i64,
    /// `likeCount`'s version (docs/LIVE.md, "Versions"): compare it with
    /// live pushes' `version`. 0: unknown, older than any push.
    pub like_version: i64,
    /// False when the request is anonymous.
    pub liked_by_me: bool,
}

impl PostView {
    pub fn new(post: PostRecord, likes: LikeState) -> Self {
        Self {
            id: post.id,
            author: post.author.into(),
            caption: post.caption,
            image_url: MediaStore::url(&post.image_file),
            thumbnail_url: MediaStore::url(&post.thumb_file),
            width: post.width,
            height: post.height,
            created_at: rfc3339_ms(post.created_at_ms),
            like_count: likes.count,
            like_version: likes.version,
            liked_by_me: likes.liked_by_viewer,
        }
    }
}

/// Milliseconds since the epoch as RFC 3339.
pub fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// The answer to every like operation.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LikeView {
    pub liked: bool,
    /// The post's count right after this operation.
    pub like_count: i64,
    /// The count's version, monotonic per post (docs/LIVE.md, "Versions"):
    /// a client shows this answer only if it is newer than what it shows.
    pub version: i64,
}

/// `?limit&cursor` for every paginated list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1–100, default 20.
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    pub const DEFAULT: u32 = 20;
    pub const MAX: u32 = 100;

    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(Self::DEFAULT),
            Some(n) if (1..=Self::MAX).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::invalid(format!(
                "limit must be 1–{}, got {n}",
                Self::MAX
            ))),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostPage {
    pub items: Vec<PostView>,
    /// Absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LikerView {
    pub id: i64,
    pub username: String,
    /// RFC 3339.
    pub liked_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LikerPage {
    pub items: Vec<LikerView>,
    pub next_cursor: Option<String>,
}
