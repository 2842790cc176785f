-- rebuild.lua: rebuild a sale's Redis state from SQL after Redis lost data (reconcile --repair), atomically.
-- KEYS[1] sale hash  KEYS[2] buyers hash  KEYS[3] holds hash  KEYS[4] idem hash  KEYS[5] deadlines zset
-- KEYS[6] outbox stream   (all of one sale: one hash tag)
-- Hold records (field hold_id, value JSON with short keys u q p s r t c pr x): inventory/holds.py
-- ARGV[1] sale_id  ARGV[2] room_id  ARGV[3] sku  ARGV[4] unit_price  ARGV[5] currency  ARGV[6] allocated
-- ARGV[7] per_user_limit  ARGV[8] starts_at_ms  ARGV[9] ends_at_ms  ARGV[10] hold_ttl_ms   (the SQL sale row)
-- ARGV[11] settlement consumer group ("settle")
-- then per unit sold according to SQL 7 args: order_id (= hold id), user_id, qty, payment_ref, reserved_at_ms,
--   confirmed_at_ms, in_sql ("1": an orders row; "0": a paid/confirmed payment without its order row)
-- What Redis still has is kept: its holds (held ones stay held, with their deadlines), its confirmed holds,
-- the idempotency records, the outbox. A sold record Redis does not know becomes a confirmed hold; one with
-- in_sql "0" is also appended to the outbox again (same order id, so settlement inserts it once). A held
-- hold that SQL says is paid becomes confirmed. buyers is recomputed from the holds; then
-- sold = sum of confirmed holds, held = sum of held holds, available = allocated - sold - held (never < 0),
-- and `rebuilt_at` (Redis TIME ms) is set: a hold id of this sale that Redis does not have is HOLD_LOST.
-- Returns {code, allocated, available, held, sold, added, requeued}; code REBUILT | REFUSED (the rebuilt
-- sold would be lower than the sold counter Redis still has: nothing written) | INVALID (nothing written)
local sale, buyers, holds, idem, deadlines, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local sale_id, room, sku, price, currency, allocated, limit, starts, ends, ttl = sale_terms(ARGV)
local group = ARGV[11]
local bad = {'INVALID', 0, 0, 0, 0, 0, 0}
if not (is_id(sale_id) and is_id(room) and is_id(sku) and is_id(group) and price and allocated and limit
        and starts and ends and ttl and ends > starts and (#ARGV - 11) % 7 == 0
        and type(currency) == 'string' and currency:match('^[A-Z][A-Z][A-Z]$')) then
  return bad
end
local function kind_ok(t, want) return t == 'none' or t == want end
if not (kind_ok(redis.call('TYPE', sale).ok, 'hash') and kind_ok(redis.call('TYPE', buyers).ok, 'hash')
        and kind_ok(redis.call('TYPE', holds).ok, 'hash') and kind_ok(redis.call('TYPE', idem).ok, 'hash')
        and kind_ok(redis.call('TYPE', deadlines).ok, 'zset') and kind_ok(redis.call('TYPE', outbox).ok, 'stream')) then
  return bad
end
local recs = {}
for b = 12, #ARGV, 7 do
  local q = parse_pos_int(ARGV[b + 2], 1e9)
  local rt, ct = parse_nonneg_int(ARGV[b + 4], 1e14), parse_nonneg_int(ARGV[b + 5], 1e14)
  if not (is_id(ARGV[b]) and is_id(ARGV[b + 1]) and q and is_id(ARGV[b + 3]) and rt and ct
          and (ARGV[b + 6] == '1' or ARGV[b + 6] == '0')) then
    return bad
  end
  recs[#recs + 1] = {hid = ARGV[b], u = ARGV[b + 1], q = q, pr = ARGV[b + 3], t = rt, c = ct, sql = ARGV[b + 6]}
end

local existed = redis.call('EXISTS', sale) == 1
local old = redis.call('HMGET', sale, 'sold', 'ends_at', 'armed_at')
local old_sold = tonumber(old[1]) or 0

-- what Redis still has
local have = {}
local all = redis.call('HGETALL', holds)
for i = 1, #all, 2 do have[all[i]] = cjson.decode(all[i + 1]) end

local now = now_ms()
local added, requeued = 0, 0
local writes = {}
for _, r in ipairs(recs) do
  local h = have[r.hid]
  if h == nil then
    h = {u = r.u, q = r.q, p = r.c, s = 'confirmed', r = 'rebuilt', t = r.t, c = r.c, pr = r.pr}
    have[r.hid] = h
    writes[r.hid] = h
    added = added + r.q
    if r.sql == '0' then requeued = requeued + 1 end
  elseif h.s ~= 'confirmed' then
    -- paid according to SQL; held (webhook in flight) or ended in Redis: the payment wins, the unit is sold
    h.s, h.c, h.pr, h.x = 'confirmed', r.c, r.pr, nil
    writes[r.hid] = h
    added = added + h.q
    if r.sql == '0' then requeued = requeued + 1 end
  else
    r.sql = '1'  -- already confirmed in Redis: its outbox entry was written by confirm.lua
  end
  if writes[r.hid] == nil then r.sql = '1' end
end

local sold, held, units = 0, 0, {}
for _, h in pairs(have) do
  if h.s == 'confirmed' then sold = sold + h.q elseif h.s == 'held' then held = held + h.q end
  if h.s == 'confirmed' or h.s == 'held' then units[h.u] = (units[h.u] or 0) + h.q end
end
if existed and sold < old_sold then
  return {'REFUSED', allocated, 0, held, old_sold, 0, 0}
end

-- writes (nothing can fail below: every key was checked for its type)
for hid, h in pairs(writes) do
  redis.call('HSET', holds, hid, cjson.encode(h))
  redis.call('ZREM', deadlines, hid)
end
redis.call('DEL', buyers)
for u, n in pairs(units) do redis.call('HSET', buyers, u, n) end
if redis.call('EXISTS', outbox) == 0 then
  redis.call('XGROUP', 'CREATE', outbox, group, '0', 'MKSTREAM')
end
for _, r in ipairs(recs) do
  if r.sql == '0' then
    redis.call('XADD', outbox, '*', 'v', '1', 'order_id', r.hid, 'sale_id', sale_id, 'room_id', room,
               'sku', sku, 'user_id', r.u, 'qty', r.q, 'unit_price', ARGV[4], 'currency', currency,
               'payment_ref', r.pr, 'reserved_at', r.t, 'confirmed_at', r.c)
  end
end
local ends_at = ends
if tonumber(old[2]) and tonumber(old[2]) < ends_at then ends_at = tonumber(old[2]) end  -- stopped early
local available = allocated - sold - held
if available < 0 then available = 0 end
redis.call('HSET', sale, 'id', sale_id, 'room', room, 'sku', sku, 'price', ARGV[4], 'currency', currency,
           'allocated', ARGV[6], 'available', available, 'held', held, 'sold', sold, 'limit', ARGV[7],
           'starts_at', ARGV[8], 'ends_at', ends_at, 'hold_ttl', ARGV[10], 'armed_at', old[3] or now,
           'rebuilt_at', now)
return {'REBUILT', allocated, available, held, sold, added, requeued}
