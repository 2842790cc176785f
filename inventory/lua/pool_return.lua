-- pool_return.lua: an ended pool-backed sale gives its unsold units back to the pool, atomically.
-- Run by the reaper on every pass (and by a host's end-and-return): after the sale ended, every unit
-- that is available (unsold, or returned since by an expired or released hold) moves back once; the
-- sale's `allocated` shrinks by as much, so available + held + sold == allocated still holds.
-- KEYS[1] pool bucket hash  KEYS[2] transfers hash  KEYS[3] journal hash  KEYS[4] sale hash
-- ARGV (none)
-- Returns {code, units, pool_available}; code RETURNED | NOTHING (ended, nothing available) | OPEN
--   (not ended yet) | NOT_FOUND (no pool, or no sale of this pool)
local pool, transfers, journal, sale = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if not sale_exists(pool) or not sale_exists(sale) then return {'NOT_FOUND', 0, 0} end
local p = redis.call('HMGET', pool, 'pool', 'available')
local s = redis.call('HMGET', sale, 'pool', 'available', 'ends_at', 'id')
if not p[1] or s[1] ~= p[1] then return {'NOT_FOUND', 0, 0} end
local now = now_ms()
if now < tonumber(s[3]) then return {'OPEN', 0, tonumber(p[2])} end
local units = tonumber(s[2])
if units <= 0 then return {'NOTHING', 0, tonumber(p[2])} end
local seq = redis.call('HINCRBY', sale, 'returns', 1)
redis.call('HSET', sale, 'available', 0)
redis.call('HINCRBY', sale, 'allocated', -units)
redis.call('HINCRBY', sale, 'returned', units)
local pool_available = redis.call('HINCRBY', pool, 'available', units)
redis.call('HINCRBY', pool, 'allocated', units)
redis.call('HINCRBY', pool, 'out', -units)
local tid = string.format('return:%s:%d', s[4], seq)
redis.call('HSET', transfers, tid, 'return')
redis.call('HSET', journal, tid, cjson.encode({k = 'return', u = units, s = s[4], r = '', why = '', t = now}))
return {'RETURNED', units, pool_available}
