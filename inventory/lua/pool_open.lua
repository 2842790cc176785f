-- pool_open.lua: create a stock pool's bucket with its first units received, or confirm it exists.
-- The bucket is a sale-like hash (reserve/confirm/release/reap run on it for channel holds) with the
-- pool's own counters: received (stock in: opening units, restocks, adjustments), restocked (refunded
-- units put back), out (units allocated to sales and not returned). Invariant, per pool:
--   received + restocked == available + held + sold + out, and allocated == available + held + sold.
-- KEYS[1] pool bucket hash  KEYS[2] transfers hash  KEYS[3] journal hash (ledger entries for SQL)
-- ARGV[1] pool_id  ARGV[2] sku  ARGV[3] unit_price  ARGV[4] currency  ARGV[5] units
-- ARGV[6] per_user_limit (channel holds)  ARGV[7] hold_ttl_ms (channel holds)
-- ARGV[8] sku_limit: units one user may hold or buy of this SKU over every room and channel (0: no limit;
-- copied into each sale drawn from the pool, checked by reserve.lua against the pool's sku-buyers hash)
-- Returns {code, available}; code OPENED | EXISTS | CONFLICT | INVALID
local pool, transfers, journal = KEYS[1], KEYS[2], KEYS[3]
local pool_id, sku, currency = ARGV[1], ARGV[2], ARGV[4]
local price, units = parse_nonneg_int(ARGV[3], 1e12), parse_nonneg_int(ARGV[5], 1e9)
local limit, ttl = parse_pos_int(ARGV[6], 1e9), parse_pos_int(ARGV[7], 1e10)
local sku_limit = parse_nonneg_int(ARGV[8] or '0', 1e9)
if not (is_id(pool_id) and is_id(sku) and price and units and limit and ttl and sku_limit
        and type(currency) == 'string' and currency:match('^[A-Z][A-Z][A-Z]$')) then
  return {'INVALID', 0}
end
local kind = redis.call('TYPE', pool).ok
if kind == 'hash' then
  local cur = redis.call('HMGET', pool, 'pool', 'sku', 'price', 'currency', 'available')
  local same = cur[1] == pool_id and cur[2] == sku and tonumber(cur[3]) == price and cur[4] == currency
  return {same and 'EXISTS' or 'CONFLICT', tonumber(cur[5]) or 0}
end
if kind ~= 'none' then return {'INVALID', 0} end
local now = now_ms()
redis.call('HSET', pool, 'id', pool_id .. '--pool', 'room', pool_id, 'pool', pool_id, 'sku', sku, 'price', ARGV[3],
           'currency', currency, 'allocated', units, 'available', units, 'held', 0, 'sold', 0, 'limit', ARGV[6],
           'starts_at', 0, 'ends_at', 99999999999999, 'hold_ttl', ARGV[7], 'armed_at', now,
           'received', units, 'restocked', 0, 'out', 0, 'sku_limit', sku_limit)
local tid = 'open:' .. pool_id
redis.call('HSET', transfers, tid, 'OPENED')
redis.call('HSET', journal, tid, cjson.encode({k = 'receive', u = units, s = '', r = '', why = 'opening stock', t = now}))
return {'OPENED', units}
