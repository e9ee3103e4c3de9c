-- The embedded store. Times are milliseconds since the Unix epoch.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE posts (
    id         INTEGER PRIMARY KEY,
    author_id  INTEGER NOT NULL REFERENCES users(id),
    caption    TEXT    NOT NULL,
    image_file TEXT    NOT NULL,
    thumb_file TEXT    NOT NULL,
    width      INTEGER NOT NULL,
    height     INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    -- Maintained by the like writer in the same transaction as `likes`.
    like_count INTEGER NOT NULL DEFAULT 0
);

-- No foreign keys here on purpose: a batch of likes must never fail on one
-- bad row, or the group commit would stall every like behind it. Posts are
-- checked before a like is accepted and users come from signed tokens.
CREATE TABLE likes (
    post_id  INTEGER NOT NULL,
    user_id  INTEGER NOT NULL,
    liked_at INTEGER NOT NULL,
    PRIMARY KEY (post_id, user_id)
) WITHOUT ROWID;

CREATE INDEX likes_newest_first ON likes (post_id, liked_at DESC, user_id DESC);

CREATE TABLE signing_keys (
    id         INTEGER PRIMARY KEY,
    secret     BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);
