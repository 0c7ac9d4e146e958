-- KEYS: the batch's fingerprint hash. ARGV: ttl s, the fingerprints and the job ids,
-- each newline-separated.
-- Claims each fingerprint for its job id. Returns, newline-separated, for each pair: ""
-- when it is the first of its fingerprint, else the id of the job that claimed it first.
local function lines(text)
  local found, at = {}, 1
  while at <= #text do
    local stop = string.find(text, '\n', at, true) or #text + 1
    found[#found + 1] = string.sub(text, at, stop - 1)
    at = stop + 1
  end
  return found
end
local fingerprints, ids, first = lines(ARGV[2]), lines(ARGV[3]), {}
for i = 1, #fingerprints do
  if redis.call('HSETNX', KEYS[1], fingerprints[i], ids[i]) == 1 then
    first[i] = ''
  else
    first[i] = redis.call('HGET', KEYS[1], fingerprints[i]) or ''
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return table.concat(first, '\n')
