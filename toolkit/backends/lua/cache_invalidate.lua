-- Delete every entry of one shard filed under the tags, and record each tag's invalidation
-- so that writes computed before it are refused (cache_set.lua). Keys share the shard's
-- {hash tag}; the entries listed in an index are of the same shard, so deleting them
-- (keys not passed in KEYS) stays within the slot on a cluster.
--
-- KEYS[1]         sorted set of invalidated tags (member tag, score clock)
-- KEYS[2]         the floor: the newest clock forgotten from KEYS[1]
-- KEYS[3 ..]      the tags' indexes (sorted sets of entry keys)
-- ARGV[1]         the clock of this invalidation (cache_clock.lua), microseconds
-- ARGV[2]         how many invalidated tags KEYS[1] keeps; the oldest go to the floor
-- ARGV[3 ..]      the tags, in the order of their indexes
--
-- Returns the number of entries deleted.

local deleted = 0
for i = 3, #KEYS do
  -- GT: an invalidation that reaches this shard late never lowers a newer one's clock.
  redis.call('ZADD', KEYS[1], 'GT', ARGV[1], ARGV[i])
  local entries = redis.call('ZRANGE', KEYS[i], 0, -1)
  for first = 1, #entries, 1000 do
    deleted = deleted + redis.call('DEL', unpack(entries, first, math.min(first + 999, #entries)))
  end
  redis.call('DEL', KEYS[i])
end

local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[2])
if excess > 0 then
  local forgotten = redis.call('ZPOPMIN', KEYS[1], excess)  -- member, score, member, score...
  local newest = forgotten[#forgotten]
  if tonumber(newest) > tonumber(redis.call('GET', KEYS[2]) or '0') then
    redis.call('SET', KEYS[2], newest)
  end
end
return deleted
