-- wrk script: rotate through the bearer tokens of a file (one per line), one per request.
-- usage: wrk ... -s tokens.lua URL -- FILE
-- One line: the same token every time. Two lines (allowed, denied): a 50/50 mix.
-- Requests are built once in init, so wrk spends no time formatting them.
local requests = {}
local n = 0
local i = 0

function init(args)
  for token in io.lines(args[1]) do
    if token ~= "" then
      n = n + 1
      requests[n] = wrk.format("GET", wrk.path, { ["Authorization"] = "Bearer " .. token })
    end
  end
  assert(n > 0, "no tokens in " .. tostring(args[1]))
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return requests[i]
end
