-- reap.lua: expire holds whose pay-by has passed (by Redis TIME) and return their units, once.
-- Hold records (field hold_id, value JSON with short keys u q p s r t c pr x): inventory/holds.py
-- KEYS[1] sale hash  KEYS[2] buyers hash  KEYS[3] holds hash  KEYS[4] deadlines zset
-- KEYS[5] (a pool-backed sale only) the pool's per-SKU buyers hash: given back too when `sku_limit` > 0
-- ARGV[1] max holds to expire in this call
-- Returns {expired_holds, restocked_units, available, next_deadline_ms (0 = none), deposits}; deposits:
--   the expired pre-sale deposit holds (balance unpaid), flat: hold_id, user_id, qty, deposit payment ref, ...
local sale, buyers, holds, deadlines, sku_buyers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local limit = parse_pos_int(ARGV[1], 100000) or 100
if not sale_exists(sale) then return {0, 0, 0, 0, {}} end
local now = now_ms()
local sku = sku_buyers and tonumber(redis.call('HGET', sale, 'sku_limit') or '0') > 0
local due = redis.call('ZRANGEBYSCORE', deadlines, '-inf', now, 'LIMIT', 0, limit)
local count, units, deposits = 0, 0, {}
for _, hid in ipairs(due) do
  redis.call('ZREM', deadlines, hid)
  local raw = redis.call('HGET', holds, hid)
  if raw then
    local h = cjson.decode(raw)
    if h.s == 'held' or h.s == 'deposit' then
      if h.s == 'deposit' then  -- a pre-sale's balance not paid in its window: the deposit rule applies
        deposits[#deposits + 1] = hid
        deposits[#deposits + 1] = h.u
        deposits[#deposits + 1] = h.q
        deposits[#deposits + 1] = h.dr or ''
      end
      h.s = 'expired'
      h.x = now
      redis.call('HSET', holds, hid, cjson.encode(h))
      redis.call('HINCRBY', buyers, h.u, -h.q)
      if sku then redis.call('HINCRBY', sku_buyers, h.u, -h.q) end
      count = count + 1
      units = units + h.q
    end
  end
end
local available
if units > 0 then
  redis.call('HINCRBY', sale, 'held', -units)
  available = redis.call('HINCRBY', sale, 'available', units)
else
  available = tonumber(redis.call('HGET', sale, 'available'))
end
local nxt = redis.call('ZRANGE', deadlines, 0, 0, 'WITHSCORES')
return {count, units, available, tonumber(nxt[2] or '0'), deposits}
