-- Extend a lease, only for the holder that still has it.
-- KEYS[1]  the lease
-- ARGV[1]  the holder's token
-- ARGV[2]  new time to live, milliseconds from now
-- Returns 1 when extended, 0 when the lease expired or someone else holds it.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
