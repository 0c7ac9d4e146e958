-- KEYS: batch hash, done set, retrying set, waiting set. ARGV: job id, state, ttl s.
-- Moves the job into state out of any other; a finished job never moves again.
-- Nothing is written for a batch whose record has expired. A job is in at most one
-- interim set, so the look for it stops at the first hit. Expiry: finishing gives the
-- batch's to the batch and its done set, and every 64th finish of a kind to the interim
-- sets too, so a set that stays full through days of a slow batch lives on; an interim
-- set gets it when it is created (Redis deletes a set that empties). So a wait writes
-- no more than it must. Returns 1 when the job moved.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local id, state = ARGV[1], ARGV[2]
if redis.call('SISMEMBER', KEYS[2], id) == 1 then return 0 end
local interim = {waiting = KEYS[4], retrying = KEYS[3]}
local target = interim[state] or KEYS[2]
if redis.call('SADD', target, id) == 0 then return 0 end
for _, name in ipairs({'waiting', 'retrying'}) do
  if name ~= state and redis.call('SREM', interim[name], id) == 1 then
    redis.call('HINCRBY', KEYS[1], name, -1)
    break
  end
end
local n = redis.call('HINCRBY', KEYS[1], state, 1)
if interim[state] == nil then
  redis.call('EXPIRE', target, ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  if n % 64 == 0 then
    redis.call('EXPIRE', KEYS[3], ARGV[3])
    redis.call('EXPIRE', KEYS[4], ARGV[3])
  end
elseif n == 1 then
  redis.call('EXPIRE', target, ARGV[3])
end
return 1
