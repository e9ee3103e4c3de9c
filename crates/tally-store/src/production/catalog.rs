//! Users, posts and likers on PostgreSQL: the production catalog. The same
//! queries as the SQLite catalog, in PostgreSQL's dialect.

use async_trait::async_trait;
use rand::RngCore;
use sqlx::{PgPool, Row};

use crate::accounts::SigningKey;
use crate::domain::{PostId, UserId, Username};
use crate::{
    Catalog, Liker, LikerCursor, NewPost, PostRecord, SeededUsers, SessionStatus, StoreError, User,
};

use crate::{NO_LOGIN_HASH, now_ms};

/// The PostgreSQL implementation of [`Catalog`].
#[derive(Clone)]
pub struct PgCatalog {
    pool: PgPool,
    /// Reads that may trail the primary (the feed, who liked): a streaming
    /// replica's pool, or the primary's.
    read: PgPool,
}

impl PgCatalog {
    pub fn new(pool: PgPool) -> Self {
        Self {
            read: pool.clone(),
            pool,
        }
    }

    /// Feed pages and likers pages go to `read` (a streaming replica); all
    /// else, a single post by id included (its author reads it right after
    /// creating it), to the primary.
    pub fn with_read_pool(mut self, read: PgPool) -> Self {
        self.read = read;
        self
    }
}

/// A post query: the columns [`post_from_row`] reads, then `$tail`.
macro_rules! post_select {
    ($tail:literal) => {
        concat!(
            "SELECT p.id, p.author_id, u.username, p.caption, p.image_file, p.thumb_file, ",
            "p.width, p.height, p.created_at FROM posts p JOIN users u ON u.id = p.author_id ",
            $tail
        )
    };
}

fn post_from_row(row: &sqlx::postgres::PgRow) -> Result<PostRecord, sqlx::Error> {
    Ok(PostRecord {
        id: row.try_get(0)?,
        author: User {
            id: row.try_get(1)?,
            username: row.try_get(2)?,
        },
        caption: row.try_get(3)?,
        image_file: row.try_get(4)?,
        thumb_file: row.try_get(5)?,
        width: row.try_get::<i32, _>(6)?.max(0) as u32,
        height: row.try_get::<i32, _>(7)?.max(0) as u32,
        created_at_ms: row.try_get(8)?,
    })
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[async_trait]
impl Catalog for PgCatalog {
    async fn create_user(
        &self,
        username: &Username,
        password_hash: &str,
    ) -> Result<User, StoreError> {
        let result = sqlx::query(
            "INSERT INTO users (username, password_hash, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(username.as_str())
        .bind(password_hash)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await;
        match result {
            Ok(row) => Ok(User {
                id: row.try_get(0)?,
                username: username.as_str().to_owned(),
            }),
            Err(e) if is_unique_violation(&e) => Err(StoreError::UsernameTaken),
            Err(e) => Err(e.into()),
        }
    }

    async fn credentials(&self, username: &str) -> Result<Option<(User, String)>, StoreError> {
        let row = sqlx::query("SELECT id, username, password_hash FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok((
                User {
                    id: r.try_get(0)?,
                    username: r.try_get(1)?,
                },
                r.try_get(2)?,
            ))
        })
        .transpose()
    }

    async fn seed_users(&self, prefix: &str, count: u64) -> Result<SeededUsers, StoreError> {
        // One statement generates every row inside PostgreSQL. The table
        // lock keeps concurrent sign-ups out, so the ids are contiguous and
        // `{prefix}{n}` has id `first + n`, which token minting relies on.
        let mut tx = self.pool.begin().await?;
        sqlx::query("LOCK TABLE users IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let result = sqlx::query(
            "WITH ins AS (INSERT INTO users (username, password_hash, created_at) \
             SELECT $1 || n, $2, $3 FROM generate_series(0, $4 - 1) AS n ORDER BY n RETURNING id) \
             SELECT COALESCE(MIN(id), 0), COALESCE(MAX(id), 0), COUNT(*) FROM ins",
        )
        .bind(prefix)
        .bind(NO_LOGIN_HASH)
        .bind(now_ms())
        .bind(count as i64)
        .fetch_one(&mut *tx)
        .await;
        let row = match result {
            Ok(row) => row,
            Err(e) if is_unique_violation(&e) => return Err(StoreError::UsernameTaken),
            Err(e) => return Err(e.into()),
        };
        let (first, last, n): (i64, i64, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        if n as u64 != count || (n > 0 && last - first + 1 != n) {
            return Err(StoreError::Internal(anyhow::anyhow!(
                "seeded ids are not contiguous ({first}..={last} for {n} users)"
            )));
        }
        tx.commit().await?;
        Ok(SeededUsers {
            first_id: first,
            count,
        })
    }

    async fn create_post(&self, post: NewPost) -> Result<PostRecord, StoreError> {
        let created_at = now_ms();
        let row = sqlx::query(
            "INSERT INTO posts (author_id, caption, image_file, thumb_file, width, height, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(post.author)
        .bind(&post.caption)
        .bind(&post.image_file)
        .bind(&post.thumb_file)
        .bind(post.width as i32)
        .bind(post.height as i32)
        .bind(created_at)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| StoreError::from_user_write(e, post.author))?;
        let id: PostId = row.try_get(0)?;
        self.post(id)
            .await?
            .ok_or_else(|| StoreError::Internal(anyhow::anyhow!("post {id} vanished after insert")))
    }

    async fn post(&self, id: PostId) -> Result<Option<PostRecord>, StoreError> {
        let row = sqlx::query(post_select!("WHERE p.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(post_from_row).transpose()?)
    }

    async fn posts_by_ids(&self, ids: &[PostId]) -> Result<Vec<PostRecord>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Like feed pages, from the read pool (may trail the primary).
        let rows = sqlx::query(post_select!("WHERE p.id = ANY($1)"))
            .bind(ids)
            .fetch_all(&self.read)
            .await?;
        Ok(rows.iter().map(post_from_row).collect::<Result<_, _>>()?)
    }

    async fn posts_page(
        &self,
        before: Option<PostId>,
        limit: u32,
    ) -> Result<Vec<PostRecord>, StoreError> {
        let rows = sqlx::query(post_select!("WHERE p.id < $1 ORDER BY p.id DESC LIMIT $2"))
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        Ok(rows.iter().map(post_from_row).collect::<Result<_, _>>()?)
    }

    async fn likers_page(
        &self,
        post: PostId,
        after: Option<LikerCursor>,
        limit: u32,
    ) -> Result<Vec<Liker>, StoreError> {
        let (at, user) = after.map_or((i64::MAX, i64::MAX), |c| (c.liked_at_ms, c.user_id));
        let rows = sqlx::query(
            "SELECT l.user_id, u.username, l.liked_at FROM likes l \
             JOIN users u ON u.id = l.user_id \
             WHERE l.post_id = $1 AND l.liked AND (l.liked_at, l.user_id) < ($2, $3) \
             ORDER BY l.liked_at DESC, l.user_id DESC LIMIT $4",
        )
        .bind(post)
        .bind(at)
        .bind(user)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Liker {
                    user: User {
                        id: r.try_get(0)?,
                        username: r.try_get(1)?,
                    },
                    liked_at_ms: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        let mut secret = vec![0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        // Only the first node to start creates the key; the rest read it.
        sqlx::query(
            "INSERT INTO signing_keys (secret, created_at) SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM signing_keys)",
        )
        .bind(&secret)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        let rows = sqlx::query(
            "SELECT id, secret, retire_at FROM signing_keys WHERE retire_at IS NULL OR retire_at > $1 ORDER BY id DESC",
        )
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SigningKey {
                    id: r.try_get(0)?,
                    secret: r.try_get(1)?,
                    retire_at_ms: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn rotate_signing_key(&self, grace_ms: i64) -> Result<Vec<SigningKey>, StoreError> {
        let mut secret = vec![0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE signing_keys SET retire_at = $1 WHERE retire_at IS NULL OR retire_at > $1",
        )
        .bind(now.saturating_add(grace_ms.max(0)))
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO signing_keys (secret, created_at) VALUES ($1, $2)")
            .bind(&secret)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.signing_keys().await
    }

    async fn revoke_session(
        &self,
        user: UserId,
        session: &str,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        // Sign-outs are rare: each one also clears those past their expiry,
        // which keeps the table as small as the sessions still alive.
        sqlx::query("DELETE FROM revoked_sessions WHERE expires_at < $1")
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO revoked_sessions (session, user_id, expires_at) VALUES ($1, $2, $3) ON CONFLICT (session) DO NOTHING",
        )
        .bind(session)
        .bind(user)
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session_status(
        &self,
        user: UserId,
        session: &str,
    ) -> Result<SessionStatus, StoreError> {
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1), EXISTS (SELECT 1 FROM revoked_sessions WHERE session = $2)",
        )
        .bind(user)
        .bind(session)
        .fetch_one(&self.pool)
        .await?;
        Ok(
            match (row.try_get::<bool, _>(0)?, row.try_get::<bool, _>(1)?) {
                (false, _) => SessionStatus::UnknownUser,
                (true, true) => SessionStatus::Revoked,
                (true, false) => SessionStatus::Active,
            },
        )
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
