-- index_holds.lua: new holds into their buyers' indexes (commerce/my_holds.py), many holds in one call:
-- per hold, into its buyer's index (ZADD), the index's expiry (EXPIRE) and, where asked, the trim to the
-- newest `keep`. The same commands as the pipeline the module sends to a Redis Cluster (whose buyers' keys
-- sit in many slots). A buyer with two holds in one call has its key twice.
-- KEYS[1..n] the buyers' index keys (inventory/keys.py user_holds_key), one per hold
-- ARGV[1] ttl s  ARGV[2] keep; then per key, in KEYS order: trim (1 or 0), created ms, hold id
local ttl, keep = ARGV[1], tonumber(ARGV[2])
local i = 3
for k = 1, #KEYS do
  local key = KEYS[k]
  redis.call('ZADD', key, ARGV[i + 1], ARGV[i + 2])
  redis.call('EXPIRE', key, ttl)
  if ARGV[i] == '1' then redis.call('ZREMRANGEBYRANK', key, 0, -keep - 1) end
  i = i + 3
end
return #KEYS
