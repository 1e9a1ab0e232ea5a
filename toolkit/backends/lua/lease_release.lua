-- Give a lease up, only for the holder that still has it (never someone else's).
-- KEYS[1]  the lease
-- ARGV[1]  the holder's token
-- Returns 1 when released, 0 otherwise.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
