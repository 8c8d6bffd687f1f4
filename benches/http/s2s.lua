-- Server-to-server conversions by click ID (`/pixel.track?type=s2s&ClickID=...`), each with
-- a fresh click ID from $CLICK_IDS_FILE (one per line, minted by mint.lua). Thread k of n
-- takes lines k, k+n, ... so no two threads post the same ID. When a thread runs out it
-- starts over (those posts are duplicates, answered 409): `reused` counts them so run.sh
-- can say when the mint was too small.

dofile((os.getenv("BENCH_LUA_DIR") or ".") .. "/common.lua")
thread_counters = { "reused" }

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  local thread_count = tonumber(os.getenv("WRK_THREADS") or "1")
  ids = {}
  local line_no = 0
  for line in io.lines(os.getenv("CLICK_IDS_FILE")) do
    if line_no % thread_count == thread_index and #line > 0 then
      ids[#ids + 1] = line
    end
    line_no = line_no + 1
  end
  if #ids == 0 then
    ids[1] = "no-fresh-click-id"
  end
  next_id = 1
  wrapped = false
  reused = 0
end

function request()
  if next_id > #ids then
    next_id = 1
    wrapped = true
  end
  if wrapped then
    reused = reused + 1
  end
  local id = ids[next_id]
  next_id = next_id + 1
  return wrk.format("GET", "/pixel.track?type=s2s&ClickID=" .. id)
end
