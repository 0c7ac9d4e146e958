-- KEYS: parked set, kombu's unacked index, kombu's unacked hash. ARGV: delay ms, target
-- list, message JSON, the delivery tag of the message it replaces.
-- Parks a message in place of one a worker holds, and acknowledges that one, in one
-- step: a worker that dies at any moment leaves exactly one of the two. Returns the due
-- time (server ms), or -1 when the held message is no longer held (its lease ran out
-- and it went back to its queue): then nothing is parked.
if redis.call('ZREM', KEYS[2], ARGV[4]) == 0 then return -1 end
redis.call('HDEL', KEYS[3], ARGV[4])
local t = redis.call('TIME')
local due = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], due, ARGV[2] .. '\n' .. ARGV[3])
return due
