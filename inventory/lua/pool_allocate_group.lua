-- pool_allocate_group.lua: launch a sale of several variants at once, each variant's units moving out of
-- its own pool, all or nothing (the pools of one product's variants share its hash slot: keys.slot_family).
-- The variant sales share one buyers hash (keys.sale_keys), so the per-user limit holds across them.
-- KEYS[4i-3] variant i's pool bucket hash  KEYS[4i-2] its transfers hash  KEYS[4i-1] its journal hash
-- KEYS[4i] variant i's sale hash (i = 1..n; KEYS[1]..KEYS[4] are the first variant's)
-- ARGV[1] n (variants), then for each variant 10 values as arm.lua's ARGV[1..10]: sale_id, room_id, sku,
-- unit_price, currency, allocated, per_user_limit, starts_at_ms, ends_at_ms, hold_ttl_ms
-- Returns {code, variant, pool_available}; code ARMED | EXISTS (this launch happened: nothing now)
--   | CONFLICT (some of these sales exist with other terms) | POOL_SHORT (variant `variant`'s pool has only
--   `pool_available`: nothing written) | NOT_FOUND (variant `variant`'s pool is not open) | INVALID
local n = parse_pos_int(ARGV[1], 50)
if not n or #KEYS ~= 4 * n or #ARGV ~= 1 + 10 * n then return {'INVALID', 0, 0} end
local v = {}
for i = 1, n do
  local t = {}
  for j = 1, 10 do t[j] = ARGV[1 + (i - 1) * 10 + j] end
  local sale_id, room, sku, price, currency, allocated, limit, starts, ends, ttl = sale_terms(t)
  if not (is_id(sale_id) and is_id(room) and is_id(sku) and price and allocated and limit and starts and ends
          and ttl and ends > starts and allocated > 0
          and type(currency) == 'string' and currency:match('^[A-Z][A-Z][A-Z]$')) then
    return {'INVALID', i, 0}
  end
  v[i] = {pool = KEYS[4 * i - 3], transfers = KEYS[4 * i - 2], journal = KEYS[4 * i - 1], sale = KEYS[4 * i],
          t = t, sale_id = sale_id, room = room, allocated = allocated, tid = 'allocate:' .. sale_id}
end
-- pass 1: decide, writing nothing
local existing = 0
for i = 1, n do
  local x = v[i]
  if not sale_exists(x.pool) or redis.call('HEXISTS', x.pool, 'pool') == 0 then return {'NOT_FOUND', i, 0} end
  local p = redis.call('HMGET', x.pool, 'pool', 'available', 'sku_limit')
  x.pool_id, x.pool_available, x.sku_limit = p[1], tonumber(p[2]), p[3] or 0
  local kind = redis.call('TYPE', x.sale).ok
  if kind == 'hash' then
    local same = redis.call('HGET', x.sale, 'pool') == x.pool_id
        and redis.call('HGET', x.transfers, x.tid) == 'allocate:' .. x.sale_id
    if not same then return {'CONFLICT', i, x.pool_available} end
    existing = existing + 1
  elseif kind ~= 'none' then
    return {'INVALID', i, 0}
  elseif x.pool_available < x.allocated then
    return {'POOL_SHORT', i, x.pool_available}
  end
end
if existing == n then return {'EXISTS', 0, 0} end
if existing > 0 then return {'CONFLICT', 0, 0} end
-- pass 2: every variant's units move out of its pool into its sale
local now = now_ms()
for i = 1, n do
  local x, t = v[i], v[i].t
  redis.call('HSET', x.sale, 'id', x.sale_id, 'room', x.room, 'sku', t[3], 'price', t[4], 'currency', t[5],
             'allocated', x.allocated, 'available', x.allocated, 'held', 0, 'sold', 0, 'limit', t[7],
             'starts_at', t[8], 'ends_at', t[9], 'hold_ttl', t[10], 'armed_at', now, 'pool', x.pool_id, 'returned', 0,
             'sku_limit', x.sku_limit)
  redis.call('HINCRBY', x.pool, 'available', -x.allocated)
  redis.call('HINCRBY', x.pool, 'allocated', -x.allocated)
  redis.call('HINCRBY', x.pool, 'out', x.allocated)
  redis.call('HSET', x.transfers, x.tid, 'allocate:' .. x.sale_id)
  redis.call('HSET', x.journal, x.tid,
             cjson.encode({k = 'allocate', u = -x.allocated, s = x.sale_id, r = x.room, why = '', t = now}))
end
return {'ARMED', 0, 0}
