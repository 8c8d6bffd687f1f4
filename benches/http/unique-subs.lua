-- Clicks whose sub IDs are all distinct (steps.sh MIX=unique-subs): affiliates commonly
-- pass their own click or transaction ID in a sub ID, so in real traffic the shard's
-- tables keyed by sub IDs (interned sid1s and tails, per-sid1 report rows) grow with
-- every click, where `SID=bench` keeps them at one entry. Each click appends
-- `SID=s<id>&sub2=t<id>` to the URL's query; visitors as in visitors.lua.

dofile((os.getenv("BENCH_LUA_DIR") or ".") .. "/visitors.lua")

local visitors_init = init
function init(args)
  visitors_init(args)
  -- steps.sh passes its step number: each step is a new wrk run counting from 0, so the
  -- step and the thread make the IDs distinct across runs.
  id_prefix = (args[1] or "0") .. "." .. thread_index .. "."
  clicks_sent = 0
end

function request()
  clicks_sent = clicks_sent + 1
  local id = id_prefix .. clicks_sent
  return wrk.format(nil, wrk.path .. "&SID=s" .. id .. "&sub2=t" .. id,
    { ["User-Agent"] = user_agent() })
end
