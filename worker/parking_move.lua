-- KEYS: parked sets. ARGV: limit per set.
-- Moves every due member onto the list named in it, and returns {messages moved, ms
-- until the next parked message is due or -1 if none}. One ZRANGE by rank reads the
-- earliest members: the due ones are moved, the first one not due says when to look
-- again (0 when all it read were due: look again soon). A due message goes to the
-- front of its queue (RPUSH: kombu publishes with LPUSH and takes from the right), the
-- earliest due nearest the front: it has waited already, and a job back for a
-- reserved slot of the rate budget must not queue behind a fresh backlog until the
-- slot has passed.
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
    due[#due + 1] = first[i]
  end
  for i = #due, 1, -1 do
    local member = due[i]
    local cut = string.find(member, '\n', 1, true)
    if cut then
      redis.call('RPUSH', string.sub(member, 1, cut - 1), string.sub(member, cut + 1))
      moved = moved + 1
    end
  end
  if #due > 0 then
    redis.call('ZREM', key, unpack(due))
    if wait < 0 and #first >= 2 * limit then wait = 0 end
  end
  if wait >= 0 and (next_ms < 0 or wait < next_ms) then next_ms = wait end
end
return {moved, next_ms}
