-- KEYS: rate, pause, inflight. ARGV: now_us or ''. A read-only snapshot for describe:
-- {now, TAT or '', pause end or '', leases in force}.
local now = now_us(ARGV[1])
return {string.format('%.0f', now), redis.call('GET', KEYS[1]) or '',
        redis.call('GET', KEYS[2]) or '',
        redis.call('ZCOUNT', KEYS[3], string.format('(%.0f', now), '+inf')}
