-- KEYS: pause. ARGV: seconds_us, now_us or ''. Returns the pause now in force (us).
-- A longer pause already set is kept.
local now = now_us(ARGV[2])
local wanted = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]))
if current and current >= wanted then return math.max(current - now, 0) end
if wanted <= now then return 0 end
redis.call('SET', KEYS[1], string.format('%.0f', wanted))
keep_until(KEYS[1], wanted)
return wanted - now
