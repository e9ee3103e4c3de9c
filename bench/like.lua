-- wrk script: PUT /v1/posts/{id}/like as random seeded users on random posts.
-- Arguments (after --): <tokens file> <number of posts> <first post id>
-- The tokens file is what `tally users seed --tokens-out` writes.
local tokens = {}
local nposts, first_post

function init(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    local _, token = line:match("^(%d+) (.+)$")
    tokens[#tokens + 1] = "Bearer " .. token
  end
  f:close()
  nposts = tonumber(args[2])
  first_post = tonumber(args[3])
  -- Each wrk thread has its own Lua state: seed each differently.
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)"), 16))
end

function request()
  local token = tokens[math.random(#tokens)]
  local post = first_post + math.random(nposts) - 1
  return wrk.format("PUT", "/v1/posts/" .. post .. "/like", { ["Authorization"] = token })
end
