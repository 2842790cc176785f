-- pool_stock.lua: units into or out of a pool from outside the sales, once per transfer id:
-- `restock` (goods received) and `adjust` (a count correction, + or -) change `received`;
-- `refund_restock` (a refunded order's units put back) changes `restocked`.
-- KEYS[1] pool bucket hash  KEYS[2] transfers hash  KEYS[3] journal hash
-- ARGV[1] transfer id  ARGV[2] kind  ARGV[3] units (a signed integer; only `adjust` may be < 0)
-- ARGV[4] reason (free text, <= 800 bytes: 200 characters of UTF-8)  ARGV[5] reference (an order id, or '')
-- Returns {code, available}; code DONE | REPLAYED (this transfer id was applied before: nothing now)
--   | SHORT (a negative adjustment larger than the units available, or than the stock received: nothing
--   written) | NOT_FOUND | INVALID
local pool, transfers, journal = KEYS[1], KEYS[2], KEYS[3]
local tid, kind, reason, ref = ARGV[1], ARGV[2], ARGV[4], ARGV[5]
local raw = ARGV[3]
local neg = type(raw) == 'string' and raw:sub(1, 1) == '-'
local units = parse_pos_int(neg and raw:sub(2) or raw, 1e9)
if not (is_id(tid) and units and (kind == 'restock' or kind == 'adjust' or kind == 'refund_restock')
        and (not neg or kind == 'adjust') and type(reason) == 'string' and #reason <= 800
        and (ref == '' or is_id(ref))) then
  return {'INVALID', 0}
end
if not sale_exists(pool) or redis.call('HEXISTS', pool, 'pool') == 0 then return {'NOT_FOUND', 0} end
if redis.call('HEXISTS', transfers, tid) == 1 then
  return {'REPLAYED', tonumber(redis.call('HGET', pool, 'available'))}
end
local delta = neg and -units or units
local c = redis.call('HMGET', pool, 'available', 'received')
local available = tonumber(c[1])
-- nothing below zero: not the units available, nor the stock received (a count correction takes out at
-- most what came in; units refunds put back are counted apart, in `restocked`)
if available + delta < 0 or (kind ~= 'refund_restock' and tonumber(c[2]) + delta < 0) then
  return {'SHORT', available}
end
available = redis.call('HINCRBY', pool, 'available', delta)
redis.call('HINCRBY', pool, 'allocated', delta)
redis.call('HINCRBY', pool, kind == 'refund_restock' and 'restocked' or 'received', delta)
redis.call('HSET', transfers, tid, kind)
redis.call('HSET', journal, tid, cjson.encode({k = kind, u = delta, s = '', r = ref, why = reason, t = now_ms()}))
return {'DONE', available}
