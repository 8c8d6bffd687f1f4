-- Impressions from about two million distinct visitors (steps.sh MIX=impressions): each
-- distinct fingerprint is an entry in the shard's table of unique impressions, which thus
-- grows to millions, as on a busy banner, where visitors.lua's 100 000 would stop it early.
-- The path is the URL's (/impression.track?...).

VISITORS = 2000000
dofile((os.getenv("BENCH_LUA_DIR") or ".") .. "/visitors.lua")

-- More than the requests a wrk run can have in flight (steps.sh: 64 connections).
IN_FLIGHT_MARGIN = 1000

function init(args)
  -- steps.sh passes its step number and the requests its earlier steps sent: each step is
  -- a new wrk run, and starting where the last one stopped keeps the visitors new. The
  -- last run's requests in flight when it stopped reached the server uncounted: skip
  -- IN_FLIGHT_MARGIN visitors a step for them.
  local step, sent = tonumber(args[1]) or 0, tonumber(args[2]) or 0
  visitor = (thread_index * 7919 + sent + step * IN_FLIGHT_MARGIN) % VISITORS
end
