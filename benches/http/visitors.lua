-- Clicks and impressions from many visitors: each request carries one of VISITORS
-- User-Agents, so clicktrail sees distinct fingerprints (as in real traffic) and spreads
-- them over its shards, instead of one visitor clicking flat out. The path and query are
-- the URL's. The baseline gets the very same requests. steps.sh's other mixes build on
-- this file (they call `user_agent`, and may set VISITORS before loading it).

dofile((os.getenv("BENCH_LUA_DIR") or ".") .. "/common.lua")

-- Distinct visitors before they repeat (a repeat is a non-unique click, as in real life).
VISITORS = VISITORS or 100000

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  visitor = thread_index * 7919
end

-- The next visitor's User-Agent.
function user_agent()
  visitor = (visitor + 1) % VISITORS
  return "Mozilla/5.0 bench-visitor-" .. visitor
end

function request()
  return wrk.format(nil, nil, { ["User-Agent"] = user_agent() })
end
