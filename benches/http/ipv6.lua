-- Clicks from distinct IPv6 visitors (steps.sh MIX=ipv6): the shard keeps IPv6 addresses
-- in a side table (an IPv4 fits in the click itself), which grows with every IPv6
-- visitor. The server must trust loopback as a proxy (steps.sh configures
-- `trusted_proxies`); each click then names its client in X-Forwarded-For, an address in
-- 2001:db8::/32 (documentation prefix) made of the step, the thread and a counter, so no
-- two clicks of a steps.sh run share one. User-Agents as in visitors.lua.

dofile((os.getenv("BENCH_LUA_DIR") or ".") .. "/visitors.lua")

local visitors_init = init
function init(args)
  visitors_init(args)
  -- steps.sh passes its step number; each step is a new wrk run counting from 0.
  step = tonumber(args[1]) or 0
  clicks_sent = 0
end

function request()
  clicks_sent = clicks_sent + 1
  local ip = string.format("2001:db8:%x:%x::%x:%x", step, thread_index,
    math.floor(clicks_sent / 65536), clicks_sent % 65536)
  return wrk.format(nil, nil, { ["User-Agent"] = user_agent(), ["X-Forwarded-For"] = ip })
end
