-- Advance the cache's invalidation clock and return its new value.
--
-- KEYS[1]   the clock (an integer as a string; missing reads as 0)
--
-- Returns one more than the previous value, and at least the server's time in microseconds:
-- after Redis restarts empty the clock still moves past every value read before, so a
-- computation that started before the restart cannot pass for a later one.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0') + 1
if now > nxt then
  nxt = now
end
-- %.0f: tostring() would write 1.7e+15, which GET readers could not parse as an integer.
local text = string.format('%.0f', nxt)
redis.call('SET', KEYS[1], text)
return text
