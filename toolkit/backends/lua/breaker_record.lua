-- Add the outcomes of calls made while closed to a breaker's sliding window, and trip it when
-- the window's failure (or slow-call) rate reaches the threshold. Same arithmetic as
-- BreakerTable.record in backends/breaker_state.py.
--
-- KEYS[1]  hash: state, until, gen, trips, forced, ok       (keys share the {breaker:NAME} tag)
-- KEYS[2]  hash: "<bucket>:c" calls, "<bucket>:f" failures, "<bucket>:s" slow calls
-- KEYS[3]  sorted set of half-open probes (emptied on a trip)
-- ARGV[1]  now, ms (the caller's wall clock: every instance of the fleet agrees on it)
-- ARGV[2]  successes   ARGV[3] failures   ARGV[4] slow calls (counted since the last report)
-- ARGV[5]  1 when the caller already decided to trip (its count-based window did), else 0
-- ARGV[6]  channel to announce a transition on      ARGV[7] the breaker's name
-- ARGV[8..16]  bucket ms, buckets, minimum calls, failure rate, slow rate (0: never),
--              open ms, max open ms, probes, probe ttl ms
--
-- Returns {state, until, generation, forced, calls, failures, slow, 0}.

local now = tonumber(ARGV[1])
local ok_calls, failed_calls, slow_calls = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local bucket_ms, buckets = tonumber(ARGV[8]), tonumber(ARGV[9])
local minimum, failure_rate, slow_rate = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local open_ms, max_open_ms = tonumber(ARGV[13]), tonumber(ARGV[14])

local s = redis.call('HMGET', KEYS[1], 'state', 'until', 'gen', 'trips', 'forced')
local state = s[1] or 'closed'
local until_ms = tonumber(s[2] or '0')
local gen = tonumber(s[3] or '0')
local trips = tonumber(s[4] or '0')
local forced = s[5] or ''

local bucket = math.floor(now / bucket_ms)
if state == 'closed' and ok_calls + failed_calls + slow_calls > 0 then
  redis.call('HINCRBY', KEYS[2], bucket .. ':c', ok_calls + failed_calls)
  redis.call('HINCRBY', KEYS[2], bucket .. ':f', failed_calls)
  redis.call('HINCRBY', KEYS[2], bucket .. ':s', slow_calls)
  redis.call('PEXPIRE', KEYS[2], bucket_ms * (buckets + 1))
end

local oldest = bucket - buckets + 1
local calls, failures, slow = 0, 0, 0
local fields = redis.call('HGETALL', KEYS[2])
for i = 1, #fields, 2 do
  local b, kind = string.match(fields[i], '^(-?%d+):(%a)$')
  b = tonumber(b)
  if b < oldest then
    redis.call('HDEL', KEYS[2], fields[i])
  elseif kind == 'c' then
    calls = calls + tonumber(fields[i + 1])
  elseif kind == 'f' then
    failures = failures + tonumber(fields[i + 1])
  else
    slow = slow + tonumber(fields[i + 1])
  end
end

if state == 'closed' and forced == '' then
  local rated = calls >= minimum and calls > 0
  if ARGV[5] == '1' or (rated and (failures >= failure_rate * calls
      or (slow_rate > 0 and slow >= slow_rate * calls))) then
    -- Exponential backoff of the open period, capped.
    trips = trips + 1
    local open_for = math.min(max_open_ms, open_ms * 2 ^ (trips - 1))
    state, until_ms, gen = 'open', now + open_for, gen + 1
    redis.call('HSET', KEYS[1], 'state', state, 'until', until_ms, 'gen', gen, 'trips', trips,
      'ok', 0)
    redis.call('DEL', KEYS[2], KEYS[3])
    calls, failures, slow = 0, 0, 0
    redis.call('PUBLISH', ARGV[6], cjson.encode({name = ARGV[7], state = state,
      ['until'] = until_ms, generation = gen, forced = forced}))
  end
end
return {state, until_ms, gen, forced, calls, failures, slow, 0}
