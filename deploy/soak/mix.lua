-- wrk script for the soak: a fixed mix of allowed, denied, malformed and fault requests, and a
-- count of answers by status. Tokens come from the environment (SOAK_TOKEN_OK, SOAK_TOKEN_NOSCOPE).

local ok = os.getenv("SOAK_TOKEN_OK")
local noscope = os.getenv("SOAK_TOKEN_NOSCOPE")

local function get(path, token)
  local headers = { ["Host"] = "soak.local" }
  if token then headers["Authorization"] = "Bearer " .. token end
  return wrk.format("GET", path, headers)
end

-- One cycle of 32 requests. The comment says what each must get.
local cycle = {
  get("/shop/orders/1", ok),              -- 200
  get("/shop/orders/2", ok),              -- 200
  get("/shop/orders", ok),                -- 200
  get("/shop/orders/3", ok),              -- 200
  get("/shop/orders/4", ok),              -- 200
  get("/shop/orders/5", ok),              -- 200
  get("/shop/orders/6", ok),              -- 200
  get("/shop/orders/7", ok),              -- 200
  get("/shop/orders/8", ok),              -- 200
  get("/shop/orders/9", ok),              -- 200
  get("/shop/health"),                    -- 200 (public)
  get("//shop///orders/%31", ok),         -- 200, forwarded as /shop/orders/1
  get("/shop/customers/1", noscope),      -- 403
  get("/shop/orders/1", noscope),         -- 403
  get("/shop/orders/1"),                  -- 401, no token
  get("/shop/orders/1", "garbage.token.x"), -- 401
  get("/nowhere", ok),                    -- 404
  get("/shop/../admin", ok),              -- 400 dot segment
  get("/shop/orders/%2e%2e/x", ok),       -- 400
  get("/shop/orders%2f1", ok),            -- 400 encoded slash
  get("/shop/orders/1%00", ok),           -- 400 NUL
  get("/shop/orders/1?access_token=x", ok), -- 400
  "DELETE /shop/health HTTP/1.1\r\nHost: soak.local\r\n\r\n", -- 405
  -- framing refused and the connection closed (wrk reconnects)
  "GET /shop/orders/1 HTTP/1.1\r\nHost: soak.local\r\nTransfer-Encoding: xchunked\r\n\r\n",
  "GET /shop/orders/1 HTTP/1.1\r\nHost: soak.local\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
  get("/down/1", ok),                     -- 502 upstream refuses
  get("/cut/1", ok),                      -- 502 upstream closes without answering
  get("/stall/1", ok),                    -- 504 upstream never answers
  get("/shop/orders/10", ok),             -- 200
  get("/shop/orders/11", ok),             -- 200
  get("/shop/orders/12", ok),             -- 200
  get("/shop/catalog", noscope),          -- 403
}

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  counts = {}
  i = math.random(#cycle) - 1
end

function request()
  i = i % #cycle + 1
  return cycle[i]
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("counts")) do
      total[status] = (total[status] or 0) + n
    end
  end
  local f = io.open(os.getenv("SOAK_COUNTS"), "w")
  for status, n in pairs(total) do
    f:write(string.format("%d %d\n", status, n))
  end
  -- Socket errors only: wrk also counts every status >= 400 as an error, and those are ours.
  f:write(string.format("errors %d\n", summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout))
  f:close()
end
