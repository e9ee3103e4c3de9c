-- The durable truth of the production backend. Times are milliseconds
-- since the Unix epoch, as on the embedded backend.
CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    username      TEXT   NOT NULL UNIQUE,
    password_hash TEXT   NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE posts (
    id         BIGSERIAL PRIMARY KEY,
    author_id  BIGINT  NOT NULL REFERENCES users(id),
    caption    TEXT    NOT NULL,
    image_file TEXT    NOT NULL,
    thumb_file TEXT    NOT NULL,
    width      INTEGER NOT NULL,
    height     INTEGER NOT NULL,
    created_at BIGINT  NOT NULL,
    -- Moved by the write-behind in the same transaction as `likes`, by the
    -- rows that actually changed.
    like_count BIGINT  NOT NULL DEFAULT 0
);

-- One row per (post, user) ever touched. An unlike keeps the row with
-- liked = false (a tombstone) so that its version still orders later
-- events: an event applies only if its version is newer than the row's.
-- No foreign keys: a batch must never fail on one row (see ARCHITECTURE.md).
CREATE TABLE likes (
    post_id  BIGINT  NOT NULL,
    user_id  BIGINT  NOT NULL,
    liked    BOOLEAN NOT NULL,
    version  BIGINT  NOT NULL,
    liked_at BIGINT  NOT NULL,
    PRIMARY KEY (post_id, user_id)
);

CREATE INDEX likes_newest_first ON likes (post_id, liked_at DESC, user_id DESC) WHERE liked;

CREATE TABLE signing_keys (
    id         BIGSERIAL PRIMARY KEY,
    secret     BYTEA  NOT NULL,
    created_at BIGINT NOT NULL
);
