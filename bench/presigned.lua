-- wrk script: send pre-signed requests, each one once, and count every answer that is not
-- what the server must give. Used by bench/loadgen.py; run as
--   wrk -t T -c C -d D -s presigned.lua URL -- FILE MODE
-- FILE.<thread index> holds one request a line, `PATH<TAB>AUTHORIZATION<TAB>BODY`.
-- MODE: "once" (every line at most once: the server keeps nonces, a reuse would be a replay;
-- when the lines run out the thread stops), "cycle" (start again: for servers that check
-- nothing); with "+signed" an answer must also carry X-Vectis-Signature to count as good;
-- with "+created" the answer that counts as good is a 201 (a registration), not a 200.

local threads, counter = {}, 0

function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local requests, n, i = {}, 0, 0
local once, signed, want = true, false, 200
bad, unsigned, exhausted = 0, 0, 0

function init(args)
  local file, mode = args[1], args[2]
  once = mode:find("once") ~= nil
  signed = mode:find("signed") ~= nil
  if mode:find("created") ~= nil then want = 201 end
  for line in io.lines(file .. "." .. index) do
    local path, authz, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
    n = n + 1
    requests[n] = wrk.format("POST", path, {
      ["Authorization"] = authz,
      ["Content-Type"] = "application/json",
    }, body)
  end
end

function request()
  i = i + 1
  if i > n then
    if once then
      exhausted = 1
      wrk.thread:stop()
      return wrk.format("GET", "/healthz")
    end
    i = 1
  end
  return requests[i]
end

function response(status, headers, body)
  if status ~= want then
    bad = bad + 1
  elseif signed and headers["X-Vectis-Signature"] == nil then
    unsigned = unsigned + 1
  end
end

function done(summary, latency, requests)
  local b, u, x = 0, 0, 0
  for _, t in ipairs(threads) do
    b = b + t:get("bad")
    u = u + t:get("unsigned")
    x = x + t:get("exhausted")
  end
  local e = summary.errors
  io.write(string.format(
    'VECTIS-WRK {"requests":%d,"seconds":%.6f,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"bad_status":%d,"unsigned":%d,"exhausted":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    latency.max, b, u, x, e.connect + e.read + e.write + e.timeout))
end
