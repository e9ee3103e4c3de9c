-- The like script: see scripts.rs for its contract. Loaded by the
-- service (include_str!) and by bench/redis_ceiling.py.
-- ARGV[10]: the sender's deadline (its clock, ms; 0 or absent: none). A
-- script held on a stalled link runs when the link heals; its sender has
-- answered 503 and may answer the same user from PostgreSQL meanwhile, so
-- running it late (with a newer version) could undo that answer.
local deadline = tonumber(ARGV[10] or '0')
if deadline > 0 then
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if now_ms > deadline then return {-2, now_ms, 0, 0} end
end
if KEYS[7] then
  -- A toggle carries a request id: a replay (a cluster client re-sends a
  -- script after a dropped connection) answers what the first run did
  -- instead of flipping the like back.
  local prior = redis.call('GET', KEYS[7])
  if prior then
    local s, c, l, v = string.match(prior, '(-?%d+) (-?%d+) (-?%d+) (-?%d+)')
    return {tonumber(s), tonumber(c), tonumber(l), tonumber(v)}
  end
end
local function answer(status, count, liked, version)
  if KEYS[7] then
    -- ARGV[9]: how long the answer is kept, in ms (an Idempotency-Key's
    -- retention; 10 s for a toggle without one).
    redis.call('SET', KEYS[7], string.format('%d %d %d %d', status, count, liked, version), 'PX', tonumber(ARGV[9] or '10000'))
  end
  return {status, count, liked, version}
end
local n = redis.call('GET', KEYS[1])
if not n then return {-1, 0, 0, 0} end
local member = redis.call('SISMEMBER', KEYS[2], ARGV[1])
local want
if ARGV[2] == 'like' then want = 1
elseif ARGV[2] == 'unlike' then want = 0
else want = 1 - member end
if want == member then
  -- Nothing changed: return the partition's latest version, so a strict
  -- caller can wait until what it repeats is durable.
  return answer(0, tonumber(n), member, tonumber(redis.call('GET', KEYS[4]) or '0'))
end
local count
if want == 1 then
  redis.call('SADD', KEYS[2], ARGV[1])
  count = redis.call('INCR', KEYS[1])
else
  redis.call('SREM', KEYS[2], ARGV[1])
  count = redis.call('DECR', KEYS[1])
end
-- Trending: the post gained (or lost) a like in this minute and this hour
-- (KEYS[5], KEYS[6]; ARGV[7], ARGV[8]: their TTLs in ms). A bucket that
-- nets to zero forgets the post. The TTL is (re)armed when the post is new
-- in the bucket: a bucket is always created by such a change, so every
-- bucket has one, and a hot post's likes skip the extra call.
local delta = want == 1 and 1 or -1
for i = 5, 6 do
  local score = tonumber(redis.call('ZINCRBY', KEYS[i], delta, ARGV[3]))
  if score == 0 then
    redis.call('ZREM', KEYS[i], ARGV[3])
  elseif score == delta then
    redis.call('PEXPIRE', KEYS[i], ARGV[i + 2])
  end
end
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local version = math.max(tonumber(redis.call('GET', KEYS[4]) or '0') + 1, now_us)
redis.call('SET', KEYS[4], string.format('%d', version))
redis.call('XADD', KEYS[3], '*', 'p', ARGV[3], 'u', ARGV[1], 'l', want, 'v', string.format('%d', version), 't', ARGV[4])
local message = ARGV[3] .. ' ' .. count .. ' ' .. string.format('%d', version)
if ARGV[6] == '1' then
  -- Redis Cluster: the partition's sharded channel, in this slot.
  redis.call('SPUBLISH', ARGV[5], message)
else
  redis.call('PUBLISH', ARGV[5], message)
end
return answer(1, count, want, version)
