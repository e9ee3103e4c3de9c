//! The server-side scripts. Each runs atomically inside Redis, on the keys
//! of one partition (one Cluster slot).

use std::sync::LazyLock;

use redis::Script;

/// One like operation: dedup, count, version and outbox in one step.
///
/// KEYS: count, likers, stream, seq, the partition's trending buckets of
/// the current minute and hour (see [`super::Keys::trend`]), and for a
/// toggle its reply key (see [`super::Keys::reply`]). ARGV: user, op
/// (like|unlike|toggle), post, now_ms, live channel, `1` if that channel is
/// sharded (a cluster), the minute and hour buckets' TTLs in ms, and for a
/// toggle how long its reply is kept in ms (default 10 s), and the
/// sender's deadline in ms by its clock (0: none). A change is
/// published there as `"{post} {count} {version}"`, for live counts on
/// every node, and adds ±1 to the post in both trending buckets (a bucket
/// that nets to 0 drops the post).
/// Returns `{status, count, liked, version}`: status -2 = started after
/// the deadline and did nothing (`count` is then Redis's time in ms), -1 = the post is not
/// loaded (load it from PostgreSQL and retry), 0 = nothing changed, 1 =
/// changed (and the event is in the stream).
///
/// The version is `max(last + 1, Redis time in µs)`: strictly increasing in
/// the partition, and still ahead of every earlier version after Redis lost
/// its data, because time moved on. PostgreSQL applies an event only if its
/// version is newer than the row's, so order and replays cannot matter.
///
/// Retries are replays: like and unlike set a state, so running one twice
/// changes nothing; a toggle would flip back, so it keeps its answer under
/// its request id for ten seconds (replays come within one request's
/// timeout) and a replay returns that answer. A toggle with an
/// `Idempotency-Key` uses an id derived from user, post and key, kept for
/// the configured retention, so a client's own retry is a replay too.
///
/// The version returned is the change's, or when nothing changed the
/// partition's latest: either way the answered count is exact at it.
pub static LIKE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("like.lua")));

/// Swaps a post's likers set (built beforehand in a scratch key) and
/// count in. Used by lazy loads, which install only if the post is not
/// loaded (so of two concurrent loaders the first wins), and by repairs,
/// which install only if no like happened in the partition since the state
/// was read (so a repair never overwrites a newer like).
///
/// KEYS: count, likers, scratch (may not exist: no likes), seq. ARGV: count,
/// condition (`""`: only if not loaded; else the expected seq).
/// Returns 1 if installed.
static INSTALL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ok
if ARGV[2] == '' then
  ok = redis.call('EXISTS', KEYS[1]) == 0
else
  ok = (redis.call('GET', KEYS[4]) or '0') == ARGV[2]
end
if not ok then
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

/// When [`install_likers`] may swap a post's state in.
#[derive(Debug, Clone, Copy)]
pub enum InstallIf {
    /// The post is not loaded (lazy load).
    NotLoaded,
    /// The partition's seq is still this (repair).
    SeqIs(i64),
}

/// Builds `likers` in a scratch set (in chunks, so a post with millions of
/// likes does not make one huge command) and swaps it in under `condition`.
/// Returns whether it was installed.
pub async fn install_likers(
    redis: &mut super::RedisConn,
    keys: &super::Keys,
    post: i64,
    likers: &[i64],
    condition: InstallIf,
) -> redis::RedisResult<bool> {
    let scratch = keys.loading(post, rand::random());
    for chunk in likers.chunks(10_000) {
        redis::pipe()
            .sadd(&scratch, chunk)
            .ignore()
            .pexpire(&scratch, 60_000)
            .ignore()
            .query_async::<()>(redis)
            .await?;
    }
    let condition = match condition {
        InstallIf::NotLoaded => String::new(),
        InstallIf::SeqIs(seq) => seq.to_string(),
    };
    let installed: i64 = INSTALL
        .key(keys.count(post))
        .key(keys.likers(post))
        .key(&scratch)
        .key(keys.seq(keys.partition(post)))
        .arg(likers.len())
        .arg(condition)
        .invoke_async(redis)
        .await?;
    Ok(installed == 1)
}

/// A partition's trending list: the best ARGV[1] posts with a score > 0,
/// as a flat `[post, score, post, score, …]`, best first.
///
/// KEYS: the stored sum for the current bucket period (see
/// [`super::Keys::trend_sum`]), the current bucket, the previous bucket,
/// then the older buckets of the window (58 minutes or 22 hours). ARGV:
/// limit, the sum's TTL in ms.
///
/// Summing 60 buckets on every read costs Redis a 60-way merge per
/// partition per node per second. The older buckets no longer change, so
/// the first read of a bucket period stores their sum (`ZUNIONSTORE`, kept
/// for that period) and every read adds the current and previous buckets
/// to it (`ZUNION` of three keys, Redis ≥ 7.0). The previous bucket stays
/// out of the stored sum so that a like stamped just before a boundary and
/// landing just after it (a script in flight, a node clock a moment
/// behind) still counts. Ties at the cut are broken by Redis's member
/// order, not the ranking's (lower id first): only the last places of a
/// full list can differ.
pub static TREND_TOP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  local args = {'ZUNIONSTORE', KEYS[1], #KEYS - 3}
  for i = 4, #KEYS do args[#args + 1] = KEYS[i] end
  redis.call(unpack(args))
  -- An empty sum stores nothing: a marker (score 0, never ranked) keeps
  -- the next read from summing again.
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('ZADD', KEYS[1], 0, '')
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
-- Ascending by score: walk from the end.
local all = redis.call('ZUNION', 3, KEYS[1], KEYS[2], KEYS[3], 'WITHSCORES')
local limit = tonumber(ARGV[1])
local out = {}
local i = #all - 1
while i >= 1 and #out < 2 * limit do
  if tonumber(all[i + 1]) <= 0 then break end
  out[#out + 1] = all[i]
  out[#out + 1] = all[i + 1]
  i = i - 2
end
return out
",
    )
});

/// Raises a partition's `applied` watermark over what is contiguous, never
/// lowers it. KEYS: the watermark, the partition's stream, its `seq`.
/// ARGV: the consumer group. Returns the watermark.
///
/// Every version up to the watermark must be in PostgreSQL (strict
/// durability answers on it). Versions grow with the stream's order, and
/// an entry is acknowledged only after its commit, so everything before the
/// oldest unacknowledged entry (the oldest pending one, else the first not
/// yet delivered) is committed: the watermark goes to just below that
/// entry's version, and to `seq` (the last version handed out) when every
/// entry is acknowledged. Not to the batch's highest version: the batch may
/// have skipped entries another consumer still holds. An oldest entry whose
/// content is gone (deleted by hand) holds the watermark where it is.
pub static RAISE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local oldest
local pending = redis.call('XPENDING', KEYS[2], ARGV[1])
if pending[1] > 0 then
  oldest = redis.call('XRANGE', KEYS[2], pending[2], pending[2])[1] or false
else
  local last
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[2])) do
    local name, delivered
    for i = 1, #group, 2 do
      if group[i] == 'name' then name = group[i + 1] end
      if group[i] == 'last-delivered-id' then delivered = group[i + 1] end
    end
    if name == ARGV[1] then last = delivered end
  end
  if not last then return cur end
  oldest = redis.call('XRANGE', KEYS[2], '(' .. last, '+', 'COUNT', 1)[1]
end
local bound
if oldest == nil then
  bound = tonumber(redis.call('GET', KEYS[3]) or '0')
elseif oldest then
  local fields = oldest[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'v' then bound = tonumber(fields[i + 1]) - 1 end
  end
end
if bound and bound > cur then
  redis.call('SET', KEYS[1], string.format('%d', bound))
  return bound
end
return cur
",
    )
});

/// Takes or keeps a lease. KEYS: lease. ARGV: node id, ttl ms.
/// Returns 1 if this node took the lease now (it was free: whoever held it
/// before, maybe this node, let it lapse, and someone else may have held it
/// meanwhile), 2 if it renewed its own, 0 if another node holds it.
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
  return 2
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
pub async fn load_all(redis: &mut super::RedisConn) -> redis::RedisResult<()> {
    for script in [&*LIKE, &*INSTALL, &*RAISE, &*LEASE, &*RELEASE, &*TREND_TOP] {
        script.load_async(redis).await?;
    }
    Ok(())
}

/// Whether an error (or any error of a pipeline) is `NOSCRIPT`.
pub fn is_noscript(err: &redis::RedisError) -> bool {
    err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        || err.to_string().contains("NoScript")
}
