-- wrk script: POST /v1/posts/{id}/like/toggle as random seeded users, 80 % of
-- the requests on the first 100 posts (hot), the rest on the others.
-- Arguments (after --): <tokens file> <number of posts> <first post id> [hot posts] [hot share]
-- The tokens file is what `tally users seed --tokens-out` writes. Post ids
-- are consecutive from <first post id> (the benchmark creates them so).
local tokens = {}
local nposts, first_post, hot, hot_share

function init(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    local _, token = line:match("^(%d+) (.+)$")
    tokens[#tokens + 1] = "Bearer " .. token
  end
  f:close()
  nposts = tonumber(args[2])
  first_post = tonumber(args[3])
  hot = math.min(tonumber(args[4] or "100"), nposts)
  hot_share = tonumber(args[5] or "0.8")
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)"), 16))
end

function request()
  local token = tokens[math.random(#tokens)]
  local post
  if math.random() < hot_share or hot == nposts then
    post = first_post + math.random(hot) - 1
  else
    post = first_post + hot + math.random(nposts - hot) - 1
  end
  return wrk.format("POST", "/v1/posts/" .. post .. "/like/toggle", { ["Authorization"] = token })
end
