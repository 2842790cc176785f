-- pool_allocate.lua: launch a sale whose units move out of a pool, atomically (the sale's keys share
-- the pool's hash slot), or confirm the same launch happened; a pool short of units refuses it whole.
-- KEYS[1] pool bucket hash  KEYS[2] transfers hash  KEYS[3] journal hash  KEYS[4] sale hash
-- ARGV[1] transfer id, then ARGV[2..11] the sale's terms as arm.lua's ARGV[1..10]: sale_id, room_id,
-- sku, unit_price, currency, allocated, per_user_limit, starts_at_ms, ends_at_ms, hold_ttl_ms
-- A pre-sale only (else absent): ARGV[12] deposit per unit (minor units, 1..unit_price)
-- ARGV[13] balance_from_ms  ARGV[14] balance_by_ms (> balance_from_ms)
-- ARGV[15] deposit rule `refund` | `keep` (what confirm.lua and reap.lua do with the deposit)
-- Returns {code, available, held, sold, pool_available}; code ARMED | EXISTS | CONFLICT | POOL_SHORT
--   | NOT_FOUND (no pool) | INVALID
local pool, transfers, journal, sale = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local tid = ARGV[1]
local t = {}
for i = 2, 11 do t[i - 1] = ARGV[i] end
local sale_id, room, sku, price, currency, allocated, limit, starts, ends, ttl = sale_terms(t)
if not (is_id(tid) and is_id(sale_id) and is_id(room) and is_id(sku) and price and allocated and limit
        and starts and ends and ttl and ends > starts and allocated > 0
        and type(currency) == 'string' and currency:match('^[A-Z][A-Z][A-Z]$')) then
  return {'INVALID', 0, 0, 0, 0}
end
local dep, bal_from, bal_by, rule = nil, nil, nil, ARGV[15]
if ARGV[12] then
  dep, bal_from, bal_by = parse_pos_int(ARGV[12], 1e12), parse_nonneg_int(ARGV[13], 1e14), parse_pos_int(ARGV[14], 1e14)
  if not (dep and bal_from and bal_by and dep <= price and bal_by > bal_from and bal_by > starts
          and (rule == 'refund' or rule == 'keep')) then
    return {'INVALID', 0, 0, 0, 0}
  end
end
if not sale_exists(pool) or redis.call('HEXISTS', pool, 'pool') == 0 then return {'NOT_FOUND', 0, 0, 0, 0} end
local p = redis.call('HMGET', pool, 'pool', 'available', 'sku_limit')
local pool_available = tonumber(p[2])
local kind = redis.call('TYPE', sale).ok
if kind ~= 'none' and kind ~= 'hash' then return {'INVALID', 0, 0, 0, pool_available} end
if kind == 'hash' then
  local cur = redis.call('HMGET', sale, 'pool', 'available', 'held', 'sold')
  local same = cur[1] == p[1] and redis.call('HGET', transfers, tid) == 'allocate:' .. sale_id
  return {same and 'EXISTS' or 'CONFLICT', tonumber(cur[2]), tonumber(cur[3]), tonumber(cur[4]), pool_available}
end
if pool_available < allocated then return {'POOL_SHORT', 0, 0, 0, pool_available} end
local now = now_ms()
redis.call('HSET', sale, 'id', sale_id, 'room', room, 'sku', sku, 'price', t[4], 'currency', currency,
           'allocated', allocated, 'available', allocated, 'held', 0, 'sold', 0, 'limit', t[7],
           'starts_at', t[8], 'ends_at', t[9], 'hold_ttl', t[10], 'armed_at', now, 'pool', p[1], 'returned', 0,
           'sku_limit', p[3] or 0)
if dep then
  redis.call('HSET', sale, 'dep', dep, 'bal_from', bal_from, 'bal_by', bal_by, 'dep_rule', rule)
end
pool_available = redis.call('HINCRBY', pool, 'available', -allocated)
redis.call('HINCRBY', pool, 'allocated', -allocated)
redis.call('HINCRBY', pool, 'out', allocated)
redis.call('HSET', transfers, tid, 'allocate:' .. sale_id)
redis.call('HSET', journal, tid, cjson.encode({k = 'allocate', u = -allocated, s = sale_id, r = room, why = '', t = now}))
return {'ARMED', allocated, 0, 0, pool_available}
