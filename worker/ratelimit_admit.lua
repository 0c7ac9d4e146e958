-- KEYS: rate, pause. ARGV: interval_us (0 = no rate limit), burst, now_us or '', reserve_us.
-- Returns {microseconds to wait, 1 when the wait is a pause, 1 when the slot is taken}.
-- A slot at most reserve_us ahead is taken (reserved) for the caller, who then waits
-- for it and goes without asking again; a later slot takes nothing.
-- worker.gcra.gcra_step is the same arithmetic in Python.
local now = now_us(ARGV[3])
local got = redis.call('MGET', KEYS[2], KEYS[1])
local paused = tonumber(got[1])
if paused and paused > now then return {paused - now, 1, 0} end
local interval = tonumber(ARGV[1])
if interval <= 0 then return {0, 0, 1} end
local burst = tonumber(ARGV[2])
local tat = tonumber(got[2]) or now
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - interval * burst - now
if wait > tonumber(ARGV[4]) then return {wait, 0, 0} end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PXAT',
           string.format('%.0f', math.ceil(new_tat / 1000)))
if wait < 0 then wait = 0 end
return {wait, 0, 1}
