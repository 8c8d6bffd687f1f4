-- Mints click IDs for s2s.lua: `/click.track?...&R=0` answers 200 with the click ID as
-- its body; each thread appends them to "$MINT_OUT.<thread>". Writes are buffered and
-- flushed every FLUSH_EVERY IDs; the few minted after the last flush are simply unused.

dofile((os.getenv("BENCH_LUA_DIR") or ".") .. "/common.lua")

local FLUSH_EVERY = 512

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  out = assert(io.open(os.getenv("MINT_OUT") .. "." .. thread_index, "w"))
  out:setvbuf("full")
  pending = 0
  visitor = thread_index * 7919
end

-- Many visitors, as in visitors.lua, so the click IDs spread over clicktrail's shards.
function request()
  visitor = (visitor + 1) % 100000
  return wrk.format(nil, nil, { ["User-Agent"] = "Mozilla/5.0 bench-minter-" .. visitor })
end

function response(status, headers, body)
  if status == 200 and body ~= nil and #body > 0 then
    out:write(body, "\n")
    pending = pending + 1
    if pending >= FLUSH_EVERY then
      out:flush()
      pending = 0
    end
  end
end
