-- arm.lua: create a sale's stock pool, or confirm an identical one exists (idempotent).
-- KEYS[1] sale hash            {sale:<id>}:sale
-- ARGV[1] sale_id   ARGV[2] room_id   ARGV[3] sku   ARGV[4] unit_price (minor units)
-- ARGV[5] currency  ARGV[6] allocated ARGV[7] per_user_limit
-- ARGV[8] starts_at_ms  ARGV[9] ends_at_ms  ARGV[10] hold_ttl_ms
-- Returns {code, available, held, sold}; code ARMED | EXISTS | CONFLICT | INVALID
local sale = KEYS[1]
local sale_id, room, sku, price, currency, allocated, limit, starts, ends, ttl = sale_terms(ARGV)
if not (is_id(sale_id) and is_id(room) and is_id(sku) and price and allocated and limit
        and starts and ends and ttl and ends > starts
        and type(currency) == 'string' and currency:match('^[A-Z][A-Z][A-Z]$')) then
  return {'INVALID', 0, 0, 0}
end
local kind = redis.call('TYPE', sale).ok
if kind ~= 'none' and kind ~= 'hash' then return {'INVALID', 0, 0, 0} end
if kind == 'hash' then
  local cur = redis.call('HMGET', sale, 'room', 'sku', 'price', 'currency', 'allocated', 'limit',
                         'starts_at', 'ends_at', 'hold_ttl', 'available', 'held', 'sold')
  local same = cur[1] == room and cur[2] == sku and tonumber(cur[3]) == price and cur[4] == currency
      and tonumber(cur[5]) == allocated and tonumber(cur[6]) == limit and tonumber(cur[7]) == starts
      and tonumber(cur[8]) == ends and tonumber(cur[9]) == ttl
  local code = same and 'EXISTS' or 'CONFLICT'
  return {code, tonumber(cur[10]), tonumber(cur[11]), tonumber(cur[12])}
end
redis.call('HSET', sale, 'id', sale_id, 'room', room, 'sku', sku, 'price', ARGV[4], 'currency', currency,
           'allocated', ARGV[6], 'available', ARGV[6], 'held', 0, 'sold', 0, 'limit', ARGV[7],
           'starts_at', ARGV[8], 'ends_at', ARGV[9], 'hold_ttl', ARGV[10], 'armed_at', now_ms())
return {'ARMED', allocated, 0, 0}
