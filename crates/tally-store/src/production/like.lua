-- The like script: see scripts.rs for its contract. Loaded by the
-- service (include_str!) and by bench/redis_ceiling.py.
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
  return {0, tonumber(n), member, tonumber(redis.call('GET', KEYS[4]) or '0')}
end
local count
if want == 1 then
  redis.call('SADD', KEYS[2], ARGV[1])
  count = redis.call('INCR', KEYS[1])
else
  redis.call('SREM', KEYS[2], ARGV[1])
  count = redis.call('DECR', KEYS[1])
end
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local version = math.max(tonumber(redis.call('GET', KEYS[4]) or '0') + 1, now_us)
redis.call('SET', KEYS[4], string.format('%d', version))
redis.call('XADD', KEYS[3], '*', 'p', ARGV[3], 'u', ARGV[1], 'l', want, 'v', string.format('%d', version), 't', ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[3] .. ' ' .. count .. ' ' .. string.format('%d', version))
return {1, count, want, version}
