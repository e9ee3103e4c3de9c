-- `likes` hash-partitioned by post: the table that grows with every like
-- (a row per (post, user) ever touched) split into 16 partitions, so that
-- vacuum, index builds and a future move of partitions to other disks or
-- servers work on a sixteenth of it at a time. A post's rows stay in one
-- partition, so every query by post (the write-behind's batches, who
-- liked, reconciliation) reads one partition; the primary key includes the
-- partition key, so `ON CONFLICT (post_id, user_id)` works unchanged.
--
-- The migration keeps every row: the old table is renamed, its rows copied
-- into the partitioned one, then dropped, in the migration's transaction.
-- It locks `likes` for the copy: run it in a quiet moment on a big table
-- (docs/OPERATIONS.md). A node that cannot take the lock within 30 s
-- fails to start rather than queueing every reader behind it.
SET LOCAL lock_timeout = '30s';
ALTER TABLE likes RENAME TO likes_unpartitioned;
ALTER INDEX likes_pkey RENAME TO likes_unpartitioned_pkey;
ALTER INDEX likes_newest_first RENAME TO likes_unpartitioned_newest_first;

CREATE TABLE likes (
    post_id  BIGINT  NOT NULL,
    user_id  BIGINT  NOT NULL,
    liked    BOOLEAN NOT NULL,
    version  BIGINT  NOT NULL,
    liked_at BIGINT  NOT NULL,
    PRIMARY KEY (post_id, user_id)
) PARTITION BY HASH (post_id);

DO $$
BEGIN
    FOR r IN 0..15 LOOP
        EXECUTE format(
            'CREATE TABLE likes_p%s PARTITION OF likes FOR VALUES WITH (MODULUS 16, REMAINDER %s)',
            lpad(r::text, 2, '0'), r);
    END LOOP;
END
$$;

CREATE INDEX likes_newest_first ON likes (post_id, liked_at DESC, user_id DESC) WHERE liked;

INSERT INTO likes (post_id, user_id, liked, version, liked_at)
SELECT post_id, user_id, liked, version, liked_at FROM likes_unpartitioned;

DROP TABLE likes_unpartitioned;
