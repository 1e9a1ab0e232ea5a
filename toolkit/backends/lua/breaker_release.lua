-- Report a half-open probe's outcome: a failure opens the breaker again (longer), K successes
-- close it, an ignored probe (cancelled) gives its permit back. Reports from an earlier
-- generation only give the permit back. Same arithmetic as BreakerTable.release_probe.
--
-- KEYS[1]  state hash   KEYS[2] window hash   KEYS[3] probe sorted set
-- ARGV[1]  now, ms      ARGV[2] the probe's token   ARGV[3] the generation it was granted in
-- ARGV[4]  outcome: success, failure or ignored
-- ARGV[5]  channel      ARGV[6] the breaker's name
-- ARGV[7..15]  config (see breaker_record.lua)
--
-- Returns {state, until, generation, forced, 0, 0, 0, 0}.

local now = tonumber(ARGV[1])
local open_ms, max_open_ms, probes = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])

local held = redis.call('ZREM', KEYS[3], ARGV[2])
local s = redis.call('HMGET', KEYS[1], 'state', 'until', 'gen', 'trips', 'forced', 'ok')
local state = s[1] or 'closed'
local until_ms = tonumber(s[2] or '0')
local gen = tonumber(s[3] or '0')
local trips = tonumber(s[4] or '0')
local forced = s[5] or ''
local succeeded = tonumber(s[6] or '0')

if state ~= 'half_open' or gen ~= tonumber(ARGV[3]) then
  return {state, until_ms, gen, forced, 0, 0, 0, 0}
end
local moved = false
if ARGV[4] == 'failure' then
  trips = trips + 1
  state, until_ms, gen = 'open', now + math.min(max_open_ms, open_ms * 2 ^ (trips - 1)), gen + 1
  redis.call('HSET', KEYS[1], 'state', state, 'until', until_ms, 'gen', gen, 'trips', trips,
    'ok', 0)
  redis.call('DEL', KEYS[2], KEYS[3])
  moved = true
elseif ARGV[4] == 'success' and held == 1 then
  succeeded = succeeded + 1
  if succeeded >= probes then
    state, until_ms, gen = 'closed', 0, gen + 1
    redis.call('HSET', KEYS[1], 'state', state, 'until', 0, 'gen', gen, 'trips', 0, 'ok', 0)
    redis.call('DEL', KEYS[2], KEYS[3])
    moved = true
  else
    redis.call('HSET', KEYS[1], 'ok', succeeded)
  end
end
if moved then
  redis.call('PUBLISH', ARGV[5], cjson.encode({name = ARGV[6], state = state,
    ['until'] = until_ms, generation = gen, forced = forced}))
end
return {state, until_ms, gen, forced, 0, 0, 0, 0}
