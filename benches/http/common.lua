-- Shared by every wrk script of benches/http/run.sh: prints one machine-readable RESULT
-- line at the end of a run (run.sh parses it), so no wrk text output is scraped.
-- Scripts that count per-thread things keep their threads in the global `threads`
-- (filled by their `setup`) and name the counters in `thread_counters`.

threads = threads or {}
thread_counters = thread_counters or {}

function done(summary, latency, requests)
  local duration_s = summary.duration / 1e6
  local e = summary.errors
  local line = string.format(
    "RESULT requests=%d duration_s=%.3f rps=%.1f p50_us=%d p99_us=%d " ..
    "errors_status=%d errors_connect=%d errors_read=%d errors_write=%d errors_timeout=%d",
    summary.requests, duration_s, summary.requests / duration_s,
    latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout)
  for _, name in ipairs(thread_counters) do
    local total = 0
    for _, thread in ipairs(threads) do
      total = total + (tonumber(thread:get(name)) or 0)
    end
    line = line .. string.format(" %s=%d", name, total)
  end
  io.write(line, "\n")
end
