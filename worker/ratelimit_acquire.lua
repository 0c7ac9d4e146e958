-- KEYS: inflight. ARGV: token, cap, lease_us, now_us or ''. Returns 1 when leased.
-- Lapsed leases are dropped first; the set expires with its last lease.
local now = now_us(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[3])), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
keep_until(KEYS[1], tonumber(last[2]))
return 1
