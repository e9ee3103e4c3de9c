-- Fencing for the write-behind: one row per partition stream (its Redis
-- key, so deployments sharing a database never collide) with the epoch of
-- the worker that may commit its events. A worker that takes a partition's
-- lease over bumps the epoch; every batch re-checks, inside its own
-- transaction and under this row's lock, that no newer epoch was
-- registered, and rolls back if one was. So once a takeover has committed,
-- a paused former owner can commit nothing more for that partition
-- (docs/ARCHITECTURE.md, "Fencing").
CREATE TABLE sync_fence (
    stream TEXT   PRIMARY KEY,
    epoch  BIGINT NOT NULL
);
