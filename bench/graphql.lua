-- wrk script: POST one GraphQL operation per request and report what bench/run.sh parses.
--
--   wrk ... URL -- BODY_FILE [IDS_FILE]
--
-- BODY_FILE holds the JSON request body. With IDS_FILE (device IDs, one a line), every "%ID%"
-- in the body is replaced by the next ID, each thread starting at its own offset.
-- A response counts as an error when its status is not 200 or its body has "errors"; one with
-- the header X-Cache: hit as served from the gateway's micro-cache.

local bodies = {}
local next_body = 0
-- globals: done() reads them from each thread with thread:get
gql_errors = 0
cache_hits = 0

function init(args)
  local f = assert(io.open(args[1], "r"))
  local template = f:read("*a")
  f:close()
  if args[2] then
    for id in io.lines(args[2]) do
      if id ~= "" then
        bodies[#bodies + 1] = (template:gsub("%%ID%%", id))
      end
    end
  else
    bodies[1] = template
  end
  assert(#bodies > 0, "no request bodies")
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16))
  next_body = math.random(#bodies) - 1
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  next_body = next_body % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[next_body])
end

function response(status, headers, body)
  if status ~= 200 or body:find('"errors"', 1, true) then
    gql_errors = gql_errors + 1
  end
  if headers["X-Cache"] == "hit" then
    cache_hits = cache_hits + 1
  end
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function done(summary, latency, requests)
  local errs, hits = 0, 0
  for _, t in ipairs(threads) do
    errs = errs + (t:get("gql_errors") or 0)
    hits = hits + (t:get("cache_hits") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d mean_us=%.0f max_us=%d errors=%d socket_errors=%d cache_hits=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max, errs,
    e.connect + e.read + e.write + e.timeout, hits))
end
