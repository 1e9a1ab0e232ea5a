-- Set or clear an operator's override of a breaker: open, closed, disabled, or '' to clear
-- (which starts the breaker closed with an empty window). Announced to every instance.
--
-- KEYS[1]  state hash   KEYS[2] window hash   KEYS[3] probe sorted set
-- ARGV[1]  the override ('' to clear)   ARGV[2] channel   ARGV[3] the breaker's name
--
-- Returns {state, until, generation, forced, 0, 0, 0, 0}.

local s = redis.call('HMGET', KEYS[1], 'state', 'until', 'gen')
local state = s[1] or 'closed'
local until_ms = tonumber(s[2] or '0')
local gen = tonumber(s[3] or '0') + 1
if ARGV[1] == '' then
  state, until_ms = 'closed', 0
  redis.call('HSET', KEYS[1], 'state', state, 'until', 0, 'trips', 0, 'ok', 0)
  redis.call('DEL', KEYS[2], KEYS[3])
end
redis.call('HSET', KEYS[1], 'gen', gen, 'forced', ARGV[1])
redis.call('PUBLISH', ARGV[2], cjson.encode({name = ARGV[3], state = state,
  ['until'] = until_ms, generation = gen, forced = ARGV[1]}))
return {state, until_ms, gen, ARGV[1], 0, 0, 0, 0}
