-- Take one of a breaker's half-open probe permits: K for the whole fleet. An open breaker
-- whose period has ended moves to half-open here (announced). Same arithmetic as
-- BreakerTable.acquire_probe in backends/breaker_state.py.
--
-- KEYS[1]  state hash   KEYS[2] window hash (unused)   KEYS[3] sorted set: probe token -> expiry ms
-- ARGV[1]  now, ms      ARGV[2] this probe's token
-- ARGV[3]  channel      ARGV[4] the breaker's name
-- ARGV[5..13]  config (see breaker_record.lua); probes is ARGV[12], probe ttl ms ARGV[13]
--
-- Returns {state, until, generation, forced, 0, 0, 0, granted (1 or 0)}.

local now = tonumber(ARGV[1])
local probes, ttl = tonumber(ARGV[12]), tonumber(ARGV[13])

local s = redis.call('HMGET', KEYS[1], 'state', 'until', 'gen', 'forced', 'ok')
local state = s[1] or 'closed'
local until_ms = tonumber(s[2] or '0')
local gen = tonumber(s[3] or '0')
local forced = s[4] or ''
local succeeded = tonumber(s[5] or '0')

if forced ~= '' then
  return {state, until_ms, gen, forced, 0, 0, 0, 0}
end
if state == 'open' and now >= until_ms then
  state, gen, succeeded = 'half_open', gen + 1, 0
  redis.call('HSET', KEYS[1], 'state', state, 'gen', gen, 'ok', 0)
  redis.call('DEL', KEYS[3])
  redis.call('PUBLISH', ARGV[3], cjson.encode({name = ARGV[4], state = state,
    ['until'] = until_ms, generation = gen, forced = forced}))
end
local granted = 0
if state == 'half_open' then
  -- A probe whose process died never reports: its permit lapses after the ttl.
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if succeeded + redis.call('ZCARD', KEYS[3]) < probes then
    redis.call('ZADD', KEYS[3], now + ttl, ARGV[2])
    redis.call('PEXPIRE', KEYS[3], ttl)
    granted = 1
  end
end
return {state, until_ms, gen, forced, 0, 0, 0, granted}
