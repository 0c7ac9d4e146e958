-- KEYS: parked sets. ARGV: limit per set.
-- Moves every due member onto the list named in it (LPUSH, as kombu publishes), and
-- returns {messages moved, ms until the next parked message is due or -1 if none}.
-- One ZRANGE by rank reads the earliest members: the due ones are moved, the first one
-- not due says when to look again (0 when all it read were due: look again soon).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local moved = 0
local next_ms = -1
for _, key in ipairs(KEYS) do
  local first = redis.call('ZRANGE', key, 0, limit - 1, 'WITHSCORES')
  local due = {}
  local wait = -1
  for i = 1, #first, 2 do
    local score = tonumber(first[i + 1])
    if score > now then wait = score - now break end
    local member = first[i]
    local cut = string.find(member, '\n', 1, true)
    if cut then
      redis.call('LPUSH', string.sub(member, 1, cut - 1), string.sub(member, cut + 1))
      moved = moved + 1
    end
    due[#due + 1] = member
  end
  if #due > 0 then
    redis.call('ZREM', key, unpack(due))
    if wait < 0 and #first >= 2 * limit then wait = 0 end
  end
  if wait >= 0 and (next_ms < 0 or wait < next_ms) then next_ms = wait end
end
return {moved, next_ms}
