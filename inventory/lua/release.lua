-- release.lua: the buyer gives a held hold back; its units return to `available` exactly once.
-- KEYS[1] sale hash  KEYS[2] buyers hash  KEYS[3] holds hash  KEYS[4] deadlines zset
-- KEYS[5] (a pool-backed sale only) the pool's per-SKU buyers hash: given back too when `sku_limit` > 0
-- Hold records (field hold_id, value JSON with short keys u q p s r t c pr x): inventory/holds.py
-- ARGV[1] hold_id  ARGV[2] user_id ("" = any owner, for operators)
-- Returns {code, status, available}; code RELEASED | NOT_HELD (no-op) | FORBIDDEN | NOT_FOUND | INVALID
local sale, buyers, holds, deadlines, sku_buyers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local hid, who = ARGV[1], ARGV[2]
if not (is_id(hid) and (who == '' or is_id(who))) then return {'INVALID', '', 0} end
if not sale_exists(sale) then return {'NOT_FOUND', '', 0} end
local raw = redis.call('HGET', holds, hid)
if not raw then return {'NOT_FOUND', '', 0} end
local h = cjson.decode(raw)
if who ~= '' and who ~= h.u then return {'FORBIDDEN', h.s, 0} end
if h.s ~= 'held' then
  return {'NOT_HELD', h.s, tonumber(redis.call('HGET', sale, 'available'))}
end
h.s = 'released'
h.x = now_ms()
redis.call('HSET', holds, hid, cjson.encode(h))
redis.call('ZREM', deadlines, hid)
redis.call('HINCRBY', sale, 'held', -h.q)
local available = redis.call('HINCRBY', sale, 'available', h.q)
redis.call('HINCRBY', buyers, h.u, -h.q)
if sku_buyers and tonumber(redis.call('HGET', sale, 'sku_limit') or '0') > 0 then
  redis.call('HINCRBY', sku_buyers, h.u, -h.q)
end
return {'RELEASED', h.s, available}
