-- Store cache entries under their tags, unless one of the tags was invalidated after the
-- caller read the invalidation clock: a value computed before an invalidation is never
-- stored after it. Keys of one call share a shard's {hash tag}, so it runs on a cluster.
--
-- KEYS[1]            sorted set of invalidated tags: member the tag, score the clock of its
--                    last invalidation (microseconds, see cache_clock.lua)
-- KEYS[2]            the floor: the newest clock forgotten from KEYS[1] when it was trimmed
-- KEYS[3 .. 2+n]     the n entries
-- KEYS[3+n ..]       one index per tag: sorted set, member an entry key, score its expiry
--                    (milliseconds, server clock); expired members are pruned on every write
-- ARGV[1]            the clock the caller read before computing, or -1 to store whatever
-- ARGV[2]            time to live, milliseconds
-- ARGV[3]            n
-- ARGV[4 .. 3+n]     the values, in the order of KEYS[3 .. 2+n]
-- ARGV[4+n ..]       the tags, in the order of their indexes
--
-- Returns n, the entries stored, or 0 when a tag was invalidated after ARGV[1] (or the
-- clock read is older than the floor: at worst a spurious refusal, never a stale write).

local read = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local first_tag = 4 + n

if read >= 0 and #ARGV >= first_tag then
  if tonumber(redis.call('GET', KEYS[2]) or '0') > read then
    return 0
  end
  for i = first_tag, #ARGV do
    local at = redis.call('ZSCORE', KEYS[1], ARGV[i])
    if at and tonumber(at) > read then
      return 0
    end
  end
end

for i = 1, n do
  redis.call('SET', KEYS[2 + i], ARGV[3 + i], 'PX', ttl)
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = first_tag, #ARGV do
  local index = KEYS[3 + n + i - first_tag]
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  for j = 1, n do
    redis.call('ZADD', index, now + ttl, KEYS[2 + j])
  end
  -- An index lives as long as its newest entry: NX sets a first expiry, GT only extends it.
  redis.call('PEXPIRE', index, ttl, 'NX')
  redis.call('PEXPIRE', index, ttl, 'GT')
end
return n
