-- Store (or clear) one flag override, record the change and announce it, atomically.
--
-- KEYS[1]   hash of overrides: flag key -> state JSON
-- KEYS[2]   list of change records, newest first (both keys share the {flags} hash tag)
-- ARGV[1]   flag key
-- ARGV[2]   new state JSON, or '' to clear the override (back to the declared default)
-- ARGV[3]   change record JSON from the caller; 'old' and 'at' are filled in here so that
--           the previous state is the one this write replaced, timed by the server's clock
-- ARGV[4]   channel to publish the flag key on
-- ARGV[5]   how many change records to keep
--
-- Returns the previous state JSON, or false when there was none.

local old = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end

local record = cjson.decode(ARGV[3])
if old then
  record['old'] = cjson.decode(old)
end
local t = redis.call('TIME')
record['at'] = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('LPUSH', KEYS[2], cjson.encode(record))
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
redis.call('PUBLISH', ARGV[4], ARGV[1])
return old
