-- pool_audit.lua: read-only, atomic snapshot of a pool and every sale drawn from it (they share its hash
-- slot), with the pool's unwritten journal and Redis TIME, so an audit compares numbers of one instant.
-- KEYS[1] pool bucket hash  KEYS[2] journal hash
-- KEYS[3] and on: the hash of each sale drawn from the pool, one key per sale (none when it has no sales)
-- ARGV (none)
-- Returns {now_ms, {available, held, sold, received, restocked, out} (empty: no pool), journal (flat:
--   transfer id, entry JSON, ...), then per sale {found (0|1), allocated, available, held, sold}}
local out = {now_ms()}
if sale_exists(KEYS[1]) then
  local c = redis.call('HMGET', KEYS[1], 'available', 'held', 'sold', 'received', 'restocked', 'out')
  for i = 1, 6 do c[i] = tonumber(c[i] or '0') end
  out[2] = c
else
  out[2] = {}
end
out[3] = redis.call('HGETALL', KEYS[2])
for i = 3, #KEYS do
  if sale_exists(KEYS[i]) then
    local s = redis.call('HMGET', KEYS[i], 'allocated', 'available', 'held', 'sold')
    out[#out + 1] = {1, tonumber(s[1]), tonumber(s[2]), tonumber(s[3]), tonumber(s[4])}
  else
    out[#out + 1] = {0, 0, 0, 0, 0}
  end
end
return out
