-- KEYS: the task's meta key. ARGV: the meta (JSON), seconds to keep it (0: no expiry).
-- Stores (and publishes) the meta unless the key already holds a finished state.
-- Returns 1 when stored.
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' and (meta['status'] == 'SUCCESS'
      or meta['status'] == 'FAILURE' or meta['status'] == 'REVOKED') then
    return 0
  end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
