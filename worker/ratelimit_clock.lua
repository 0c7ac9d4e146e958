-- Run before every ratelimit_*.lua script (worker.ratelimit joins them).
-- The clock every script uses: the caller's (tests) when given, else the server's.
-- Times are whole microseconds.
local function now_us(given)
  if given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function keep_until(key, until_us)
  redis.call('PEXPIREAT', key, string.format('%.0f', math.ceil(until_us / 1000)))
end
