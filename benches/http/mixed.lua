-- The other mixes at once (steps.sh MIX=mixed): every other request is an impression (as
-- in impressions.lua), the rest are clicks with distinct sub IDs (unique-subs.lua) from
-- distinct IPv6 visitors (ipv6.lua), so every side table grows together. Visitors (and
-- their User-Agents) come from one sequence of two million. The URL's path is not used.

VISITORS = 2000000
dofile((os.getenv("BENCH_LUA_DIR") or ".") .. "/visitors.lua")
IN_FLIGHT_MARGIN = 1000 -- as in impressions.lua

function init(args)
  -- steps.sh passes its step number and the requests its earlier steps sent (see the
  -- other mixes' scripts for why).
  step = tonumber(args[1]) or 0
  visitor = (thread_index * 7919 + (tonumber(args[2]) or 0) + step * IN_FLIGHT_MARGIN)
    % VISITORS
  sent = 0
end

function request()
  sent = sent + 1
  if sent % 2 == 0 then
    return wrk.format(nil, "/impression.track?CID=1&AFID=1&ADID=1&SID=bench",
      { ["User-Agent"] = user_agent() })
  end
  local id = step .. "." .. thread_index .. "." .. sent
  local ip = string.format("2001:db8:%x:%x::%x:%x", step, thread_index,
    math.floor(sent / 65536), sent % 65536)
  return wrk.format(nil, "/click.track?CID=1&AFID=1&ADID=1&SID=s" .. id .. "&sub2=t" .. id,
    { ["User-Agent"] = user_agent(), ["X-Forwarded-For"] = ip })
end
