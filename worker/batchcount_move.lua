-- KEYS: batch hash, done set, retrying set, waiting set. ARGV: job id, state, ttl s.
-- Moves the job into state out of any other; a finished job never moves again.
-- Nothing is written for a batch whose record has expired; every key touched gets the
-- batch's expiry again. Returns 1 when the job moved.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local id, state = ARGV[1], ARGV[2]
if redis.call('SISMEMBER', KEYS[2], id) == 1 then return 0 end
local interim = {retrying = KEYS[3], waiting = KEYS[4]}
for name, key in pairs(interim) do
  if name ~= state and redis.call('SREM', key, id) == 1 then
    redis.call('HINCRBY', KEYS[1], name, -1)
  end
end
local target = interim[state] or KEYS[2]
if redis.call('SADD', target, id) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], state, 1)
redis.call('EXPIRE', target, ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
