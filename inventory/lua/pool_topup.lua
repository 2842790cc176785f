-- pool_topup.lua: move more units from a pool into one of its live sales, atomically, once per
-- transfer id; a pool short of units or a sale that has ended refuses it (nothing written).
-- KEYS[1] pool bucket hash  KEYS[2] transfers hash  KEYS[3] journal hash  KEYS[4] sale hash
-- ARGV[1] transfer id  ARGV[2] units
-- Returns {code, sale_available, pool_available}; code TOPPED_UP | REPLAYED | POOL_SHORT | ENDED
--   | NOT_FOUND (no pool, or no sale of this pool) | INVALID
local pool, transfers, journal, sale = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local tid, units = ARGV[1], parse_pos_int(ARGV[2], 1e9)
if not (is_id(tid) and units) then return {'INVALID', 0, 0} end
if not sale_exists(pool) or not sale_exists(sale) then return {'NOT_FOUND', 0, 0} end
local p = redis.call('HMGET', pool, 'pool', 'available')
local s = redis.call('HMGET', sale, 'pool', 'available', 'ends_at', 'id')
if not p[1] or s[1] ~= p[1] then return {'NOT_FOUND', 0, 0} end
local pool_available, sale_available = tonumber(p[2]), tonumber(s[2])
if redis.call('HEXISTS', transfers, tid) == 1 then return {'REPLAYED', sale_available, pool_available} end
local now = now_ms()
if now >= tonumber(s[3]) then return {'ENDED', sale_available, pool_available} end
if pool_available < units then return {'POOL_SHORT', sale_available, pool_available} end
sale_available = redis.call('HINCRBY', sale, 'available', units)
redis.call('HINCRBY', sale, 'allocated', units)
pool_available = redis.call('HINCRBY', pool, 'available', -units)
redis.call('HINCRBY', pool, 'allocated', -units)
redis.call('HINCRBY', pool, 'out', units)
redis.call('HSET', transfers, tid, 'topup:' .. s[4])
redis.call('HSET', journal, tid, cjson.encode({k = 'topup', u = -units, s = s[4], r = '', why = '', t = now}))
return {'TOPPED_UP', sale_available, pool_available}
