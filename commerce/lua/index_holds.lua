-- index_holds.lua: new holds into their buyers' indexes (commerce/my_holds.py), many buyers in one call:
-- per index, its new holds (ZADD), its expiry (EXPIRE) and, where asked, the trim to the newest `keep`.
-- The same commands as the pipeline the module sends to a Redis Cluster (whose buyers' keys sit in many slots).
-- KEYS[1..n] the buyers' index keys (inventory/keys.py user_holds_key)
-- ARGV[1] ttl s  ARGV[2] keep; then per key, in KEYS order: trim (1 or 0), count c, then c pairs of
-- created ms, hold id
local ttl, keep = ARGV[1], tonumber(ARGV[2])
local i = 3
for k = 1, #KEYS do
  local key, trim, c = KEYS[k], ARGV[i], tonumber(ARGV[i + 1])
  redis.call('ZADD', key, unpack(ARGV, i + 2, i + 1 + 2 * c))
  redis.call('EXPIRE', key, ttl)
  if trim == '1' then redis.call('ZREMRANGEBYRANK', key, 0, -keep - 1) end
  i = i + 2 + 2 * c
end
return #KEYS
