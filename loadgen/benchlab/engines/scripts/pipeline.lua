-- benchlab: HTTP/1.1 pipelining as TechEmpower runs plaintext: each write carries
-- `depth` copies of the request, then report.lua's done(). Arguments after `--`:
-- depth [method [body_file]].

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

init = function(args)
  benchlab_request(args[2], args[3])
  local depth = tonumber(args[1]) or 1
  local batch = {}
  for i = 1, depth do
    batch[i] = wrk.format()
  end
  req = table.concat(batch)
end

request = function()
  return req
end
