-- GCRA (generic cell rate algorithm) over one or more limits, all or nothing.
--
-- KEYS[i]        theoretical arrival time (TAT) of limit i, in microseconds since the epoch.
--                All keys of one call share a {hash tag}, so the script runs on Redis Cluster.
-- ARGV[1]        cost: units this request consumes.
-- ARGV[2i]       emission interval of limit i in microseconds (period / amount, at least 1).
-- ARGV[2i+1]     period of limit i in microseconds; a full burst of `amount` fits in it.
--
-- Time is the server's (TIME), so the clocks of the app servers never matter. Integer
-- microseconds keep the arithmetic exact in Lua's doubles (below 2^53 until the year 2255).
-- If any limit rejects, no TAT is written: a rejected request costs nothing, and the reply
-- describes every limit as it stands without it.
--
-- Returns {allowed (0|1), retry_after_us, remaining_1, reset_after_us_1, remaining_2, ...}.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local allowed = 1
local retry_after = 0
local tats, new_tats = {}, {}

for i = 1, #KEYS do
  local period = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then
    tat = now
  end
  tats[i] = tat
  new_tats[i] = tat + cost * tonumber(ARGV[2 * i])
  if new_tats[i] - now > period then
    allowed = 0
    retry_after = math.max(retry_after, new_tats[i] - period - now)
  end
end

local result = {allowed, retry_after}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i])
  local period = tonumber(ARGV[2 * i + 1])
  local tat = tats[i]
  if allowed == 1 then
    tat = new_tats[i]
    -- The key is useless once its TAT has passed: let Redis drop it then (ms, rounded up).
    redis.call('SET', KEYS[i], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
  end
  result[2 * i + 1] = math.max(0, math.floor((period - (tat - now)) / interval))
  result[2 * i + 2] = tat - now
end
return result
