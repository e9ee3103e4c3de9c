//! Tally's domain and storage: everything below the HTTP API.
//!
//! This crate knows nothing of HTTP, the command line or live push: the
//! server, the load generator and the binary sit above it and depend on
//! it, never the other way round (docs/ARCHITECTURE.md, "Crates").
//!
//! Two traits are the backend seam:
//! - [`Catalog`]: users, posts, who liked (slow-changing, read-mostly data);
//! - [`Likes`]: the hot path, dedup + count in one atomic step per like.
//!
//! The embedded backend ([`embedded`]) implements both on SQLite plus
//! in-process counters; the production backend (Redis + PostgreSQL) implements
//! the same traits, and the behaviour tests in `tests/api` run against every
//! backend, so both keep the same promises.

pub mod accounts;
pub mod changes;
pub mod domain;
pub mod embedded;
pub mod production;
pub mod replay;
pub mod tasks;
pub mod trending;

pub use changes::{Change, ChangeFeed, ChangeListener};
pub use tasks::{CancelOnDrop, Stage, Tasks};
pub use trending::{Trend, TrendWindow};

use async_trait::async_trait;

use crate::accounts::SigningKey;
use crate::domain::{IdempotencyKey, PostId, UserId, Username};

/// A password hash no password verifies against: seeded users log in with
/// minted tokens only.
pub const NO_LOGIN_HASH: &str = "!seeded";

/// Milliseconds since the Unix epoch: how every store records time.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

/// A like operation on one (post, user) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LikeOp {
    Like,
    Unlike,
    Toggle,
}

impl LikeOp {
    /// The like state after applying this op to `liked`.
    pub fn apply(self, liked: bool) -> bool {
        match self {
            Self::Like => true,
            Self::Unlike => false,
            Self::Toggle => !liked,
        }
    }

    /// A label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Like => "like",
            Self::Unlike => "unlike",
            Self::Toggle => "toggle",
        }
    }
}

/// The answer to a like operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LikeOutcome {
    /// Whether the user likes the post after the operation.
    pub liked: bool,
    /// The post's count right after the operation.
    pub count: i64,
    /// Whether the operation changed anything (false for a repeated like).
    pub changed: bool,
    /// The version of the state answered (see [`LikeState::version`]):
    /// the change's own when `changed`, else the post's current one. A
    /// client keeps whichever of an answer and a push is newer.
    pub version: i64,
}

/// What a viewer sees of one post's likes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LikeState {
    pub count: i64,
    pub liked_by_viewer: bool,
    /// The count's version: monotonic per post, so a client orders a
    /// snapshot against pushes and like answers (docs/LIVE.md, "Versions").
    /// The count reflects every change up to this version. 0 means
    /// "unknown": older than any change (a count read from PostgreSQL).
    pub version: i64,
}

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub username: String,
}

/// A post as stored; counts come from [`Likes`], not from here.
#[derive(Debug, Clone)]
pub struct PostRecord {
    pub id: PostId,
    pub author: User,
    pub caption: String,
    /// File name of the original under the media directory.
    pub image_file: String,
    /// File name of the thumbnail under the media directory.
    pub thumb_file: String,
    pub width: u32,
    pub height: u32,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

/// A post to create.
#[derive(Debug, Clone)]
pub struct NewPost {
    pub author: UserId,
    pub caption: String,
    pub image_file: String,
    pub thumb_file: String,
    pub width: u32,
    pub height: u32,
}

/// One entry of a post's likers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liker {
    pub user: User,
    /// Milliseconds since the Unix epoch.
    pub liked_at_ms: i64,
}

/// Keyset position in a likers list (newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LikerCursor {
    pub liked_at_ms: i64,
    pub user_id: UserId,
}

/// The ids of a bulk-created block of users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeededUsers {
    pub first_id: UserId,
    pub count: u64,
}

/// What the store says of a well-signed token's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    Active,
    /// Signed out.
    Revoked,
    /// Its user does not exist (deleted, or never did: a token signed with a
    /// leaked key, or from before the store was reset).
    UnknownUser,
}

/// What `/readyz` reports about the like path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ready,
    /// Serving, but on a slower or weaker path (e.g. Redis unreachable):
    /// keep routing traffic here.
    Degraded(String),
    /// Cannot acknowledge likes.
    Down(String),
}

/// Storage failures, split into what callers handle and what they report.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("post {0} not found")]
    PostNotFound(PostId),
    #[error("username already taken")]
    UsernameTaken,
    /// The user a write names does not exist (deleted since its token was
    /// checked): the caller's session is over.
    #[error("user {0} does not exist")]
    UnknownUser(UserId),
    /// The store cannot answer now (outage, backlog); the client may retry.
    #[error("{0}")]
    Unavailable(String),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl StoreError {
    /// `UnknownUser` for a foreign-key violation (the only foreign keys a
    /// write can break point at `users`), else the database error.
    pub fn from_user_write(err: sqlx::Error, user: UserId) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => Self::UnknownUser(user),
            _ => Self::Database(err),
        }
    }

    /// Why the store cannot answer now, when a retry may work: an outage
    /// it reported, or a database it cannot reach (pool exhausted or
    /// closed, I/O). `None` for everything else.
    pub fn unavailable(&self) -> Option<String> {
        match self {
            Self::Unavailable(why) => Some(why.clone()),
            Self::Database(
                e @ (sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)),
            ) => Some(format!("database unavailable: {e}")),
            _ => None,
        }
    }
}

/// Users, posts and who liked what: the durable catalog.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Creates a user; [`StoreError::UsernameTaken`] when the name exists.
    async fn create_user(
        &self,
        username: &Username,
        password_hash: &str,
    ) -> Result<User, StoreError>;

    /// The user and password hash for a login, if the user exists.
    async fn credentials(&self, username: &str) -> Result<Option<(User, String)>, StoreError>;

    /// Creates `count` users named `{prefix}{n}` (n from 0) in bulk, with a
    /// password hash that no password matches: for load tests and seeding.
    async fn seed_users(&self, prefix: &str, count: u64) -> Result<SeededUsers, StoreError>;

    async fn create_post(&self, post: NewPost) -> Result<PostRecord, StoreError>;

    async fn post(&self, id: PostId) -> Result<Option<PostRecord>, StoreError>;

    /// The posts of `ids` that exist, in any order (unknown ids are left
    /// out): one query for a page of trending posts.
    async fn posts_by_ids(&self, ids: &[PostId]) -> Result<Vec<PostRecord>, StoreError>;

    /// Newest first, strictly older than `before` when given.
    async fn posts_page(
        &self,
        before: Option<PostId>,
        limit: u32,
    ) -> Result<Vec<PostRecord>, StoreError>;

    /// Newest like first, strictly after `after` in that order when given.
    async fn likers_page(
        &self,
        post: PostId,
        after: Option<LikerCursor>,
        limit: u32,
    ) -> Result<Vec<Liker>, StoreError>;

    /// Token signing keys not yet retired, newest first; creates one on
    /// first use so that every node sharing this store signs and verifies
    /// with the same keys.
    async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError>;

    /// Adds a new signing key (which then signs every new token) and
    /// retires the current ones `grace_ms` from now (keys already retiring
    /// sooner keep their time): tokens they signed keep working until then.
    /// Returns the keys as [`Catalog::signing_keys`] would.
    async fn rotate_signing_key(&self, grace_ms: i64) -> Result<Vec<SigningKey>, StoreError>;

    /// Signs a session out: tokens of `session` are refused from now on.
    /// Kept until `expires_at_ms` (when its token would have expired anyway).
    async fn revoke_session(
        &self,
        user: UserId,
        session: &str,
        expires_at_ms: i64,
    ) -> Result<(), StoreError>;

    /// Whether a well-signed token's session may still be used: one round
    /// trip that checks both its user and its revocation.
    async fn session_status(
        &self,
        user: UserId,
        session: &str,
    ) -> Result<SessionStatus, StoreError>;

    /// A cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// How far the durable store trails the answers already given.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SyncStatus {
    /// Acknowledged changes not yet in the durable store.
    pub backlog: u64,
    /// Age of the oldest of them, in milliseconds (0 when none).
    pub lag_ms: f64,
}

/// The like hot path: exact dedup and count, durable before it answers
/// (in the durability mode the backend promises).
#[async_trait]
pub trait Likes: Send + Sync + 'static {
    /// Applies `op` for `user` on `post` atomically and returns the state
    /// right after it. [`StoreError::PostNotFound`] for unknown posts.
    async fn apply(
        &self,
        post: PostId,
        user: UserId,
        op: LikeOp,
    ) -> Result<LikeOutcome, StoreError>;

    /// A toggle that a client may retry: the first call with `key` (per
    /// user and post) flips the like; a repeat within the retention
    /// answers what the first did instead of flipping again.
    async fn toggle_once(
        &self,
        post: PostId,
        user: UserId,
        key: &IdempotencyKey,
    ) -> Result<LikeOutcome, StoreError>;

    /// Counts (and whether `viewer` likes each) for a page of posts, in the
    /// order given. Unknown posts read as zero.
    async fn states(
        &self,
        posts: &[PostId],
        viewer: Option<UserId>,
    ) -> Result<Vec<LikeState>, StoreError>;

    /// The posts that gained the most likes in `window` (likes minus
    /// unlikes, see [`trending`]), best first, at most `limit`, scores > 0
    /// only. Computed afresh on every call: callers cache it.
    async fn trending(&self, window: TrendWindow, limit: usize) -> Result<Vec<Trend>, StoreError>;

    /// Health of the like path, for `/readyz`.
    async fn health(&self) -> Health;

    /// The write-behind's backlog and lag, for the load panel.
    async fn sync_status(&self) -> Result<SyncStatus, StoreError>;
}
