-- KEYS: parked set. ARGV: delay ms, target list, message JSON.
-- Returns the due time (server ms). The server's clock decides, so hosts with skewed
-- clocks park and move by one clock.
local t = redis.call('TIME')
local due = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], due, ARGV[2] .. '\n' .. ARGV[3])
return due
