-- benchlab: wrk's done() hook printing ONE JSON line with everything the lab keeps.
-- Latency is in microseconds as wrk records it (per response; with pipelining, wrk
-- records one latency per batch, from its write to the batch's last response).

local function percentiles(latency)
  local out = {}
  for _, p in ipairs({50, 75, 90, 99, 99.9, 99.99}) do
    out[#out + 1] = string.format('"%s":%d', tostring(p), latency:percentile(p))
  end
  return "{" .. table.concat(out, ",") .. "}"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"benchlab":"wrk","requests":%d,"bytes":%d,"duration_us":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},' ..
    '"latency_us":{"mean":%.3f,"stdev":%.3f,"max":%d,"percentiles":%s}}\n',
    summary.requests, summary.bytes, summary.duration,
    e.connect, e.read, e.write, e.timeout, e.status,
    latency.mean, latency.stdev, latency.max, percentiles(latency)))
end

-- The request to send, from the script's arguments after `--`: [method [body_file]] (a GET
-- without a body needs none). Set in init, so wrk still builds its request once per thread.
function benchlab_request(method, body_file)
  if method and method ~= "" then
    wrk.method = method
  end
  if body_file and body_file ~= "" then
    local f = assert(io.open(body_file, "rb"))
    wrk.body = f:read("*a")
    f:close()
  end
end

init = function(args)
  benchlab_request(args[1], args[2])
end
