-- KEYS: the token lock. ARGV: our lease.
-- Deletes the lock only while it still holds our lease: a holder whose lease ran out
-- must not release the next holder's lock.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
