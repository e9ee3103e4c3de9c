//! The server-side scripts. Each runs atomically inside Redis, on the keys
//! of one partition (one Cluster slot).

use std::sync::LazyLock;

use redis::Script;

/// One like operation: dedup, count, version and outbox in one step.
///
/// KEYS: count, likers, stream, seq. ARGV: user, op (like|unlike|toggle),
/// post, now_ms, live channel (a change is published there as
/// `"{post} {count} {version}"`, for live counts on every node).
/// Returns `{status, count, liked, version}`: status -1 = the post is not
/// loaded (load it from PostgreSQL and retry), 0 = nothing changed, 1 =
/// changed (and the event is in the stream).
///
/// The version is `max(last + 1, Redis time in µs)`: strictly increasing in
/// the partition, and still ahead of every earlier version after Redis lost
/// its data, because time moved on. PostgreSQL applies an event only if its
/// version is newer than the row's, so order and replays cannot matter.
pub static LIKE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("like.lua")));

/// Installs a post's state loaded from PostgreSQL, unless someone else did
/// first (two loaders never both install: the count key decides).
///
/// KEYS: count, likers, scratch set (filled beforehand; may not exist when
/// the post has no likes). ARGV: count. Returns 1 if installed.
pub static INSTALL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[3])
  return 0
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('RENAME', KEYS[3], KEYS[2])
else
  redis.call('DEL', KEYS[2])
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
",
    )
});

/// Replaces a post's state with one rebuilt from PostgreSQL, but only if
/// no like happened since the state was read (the partition's seq is still
/// what it was), so a repair never overwrites a newer like.
///
/// KEYS: count, likers, scratch, seq. ARGV: count, expected seq.
/// Returns 1 if replaced, 0 if the partition moved on.
pub static REPLACE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if (redis.call('GET', KEYS[4]) or '0') ~= ARGV[2] then
  redis.call('DEL', KEYS[3])
  return 0
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('RENAME', KEYS[3], KEYS[2])
else
  redis.call('DEL', KEYS[2])
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
",
    )
});

/// Raises a watermark, never lowers it. KEYS: key. ARGV: value.
pub static RAISE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
",
    )
});

/// Takes or keeps a lease. KEYS: lease. ARGV: node id, ttl ms.
/// Returns 1 if this node holds the lease afterwards.
pub static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local owner = redis.call('GET', KEYS[1])
if not owner then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
",
    )
});

/// Gives a lease up if this node holds it. KEYS: lease. ARGV: node id.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
",
    )
});

/// Loads every script into Redis's script cache. Single invocations reload
/// on `NOSCRIPT` by themselves, but pipelined ones do not: call this at
/// start and whenever a pipeline reports `NOSCRIPT` (after a Redis restart).
pub async fn load_all(redis: &mut redis::aio::ConnectionManager) -> redis::RedisResult<()> {
    for script in [&*LIKE, &*INSTALL, &*REPLACE, &*RAISE, &*LEASE, &*RELEASE] {
        script.load_async(redis).await?;
    }
    Ok(())
}

/// Whether an error (or any error of a pipeline) is `NOSCRIPT`.
pub fn is_noscript(err: &redis::RedisError) -> bool {
    err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        || err.to_string().contains("NoScript")
}
