-- confirm.lua: a paid hold becomes sold, and the order is appended to the outbox stream atomically.
-- KEYS[1] sale hash  KEYS[2] buyers hash  KEYS[3] holds hash  KEYS[4] deadlines zset
-- Hold records (field hold_id, value JSON with short keys u q p s r t c pr x): inventory/holds.py
-- KEYS[5] outbox stream (read by the settlement worker)
-- KEYS[6] (a pool-backed sale only) the pool's per-SKU buyers hash: given back when a late hold expires here
-- ARGV[1] hold_id  ARGV[2] payment_ref  ARGV[3] user_id ("" = any owner, for operators)
-- ARGV[4] (optional) a coupon's discount in minor units (at most price x qty; the caller locked the coupon to
-- this hold first: commerce/coupons.py)  ARGV[5] the coupon's drop id; both recorded on the hold (`dc`, `cp`)
-- and on its order. Refused (INVALID) on a pre-sale.
-- ARGV[6] (optional) a share link's attribution of the buyer, "<room>|<sharer>|<code>" (commerce/growth.py):
-- recorded on the hold (`at`) and on its order (`ref_user`, `ref_code`) only when <room> is the sale's room, the
-- hold is a room's (not a channel's) and the sharer is not the buyer; otherwise ignored.
-- Returns {code, order_id, status, fresh (1 = confirmed by this call)}; code CONFIRMED | ALREADY_CONFIRMED | EXPIRED | FORBIDDEN
--   | DEPOSITED (a pre-sale's deposit: the hold is `deposit` now, or was already with this payment ref)
--   | NOT_OPEN (a pre-sale's balance before its window opens: nothing changed)
--   | NOT_FOUND | HOLD_LOST (no such hold, and the sale was rebuilt from SQL after Redis lost data:
--   rebuild.lua's `rebuilt_at`) | INVALID. A hold past its pay-by is expired here (restocked) and loses the race.
local sale, buyers, holds, deadlines, outbox, sku_buyers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local hid, ref, who = ARGV[1], ARGV[2], ARGV[3]
local discount, coupon = tonumber(ARGV[4] or '0') or -1, ARGV[5] or ''
local attribution = ARGV[6] or ''
if not (is_id(hid) and is_id(ref) and (who == '' or is_id(who))) then return {'INVALID', '', '', 0} end
if discount < 0 or discount ~= math.floor(discount) or (discount > 0 and not is_id(coupon)) then
  return {'INVALID', '', '', 0}
end
if not sale_exists(sale) then return {'NOT_FOUND', '', '', 0} end
local raw = redis.call('HGET', holds, hid)
if not raw then
  if redis.call('HEXISTS', sale, 'rebuilt_at') == 1 then return {'HOLD_LOST', '', '', 0} end
  return {'NOT_FOUND', '', '', 0}
end
local h = cjson.decode(raw)
if who ~= '' and who ~= h.u then return {'FORBIDDEN', '', h.s, 0} end
if h.s == 'confirmed' then
  if h.pr == ref then return {'CONFIRMED', hid, h.s, 0} end
  return {'ALREADY_CONFIRMED', hid, h.s, 0}
end
-- a pre-sale (the sale has `dep`, the deposit per unit): the first payment of a held hold is its
-- deposit (the hold becomes `deposit`, held until the balance window closes); the balance is paid
-- once the window is open (`bal_from` <= now < the hold's pay-by = `bal_by`)
local pre = redis.call('HMGET', sale, 'dep', 'bal_from', 'bal_by')
local dep = tonumber(pre[1] or '0') or 0
local now = now_ms()
if dep > 0 and h.s == 'deposit' then
  if h.dr == ref then return {'DEPOSITED', hid, h.s, 0} end
  if now < tonumber(pre[2]) then return {'NOT_OPEN', '', h.s, 0} end
  if now >= h.p then return {'EXPIRED', '', h.s, 0} end  -- the reaper expires it and applies the deposit rule
elseif h.s ~= 'held' then
  return {'EXPIRED', '', h.s, 0}
end
redis.call('ZREM', deadlines, hid)
if now >= h.p then
  h.s = 'expired'
  h.x = now
  redis.call('HSET', holds, hid, cjson.encode(h))
  redis.call('HINCRBY', sale, 'held', -h.q)
  redis.call('HINCRBY', sale, 'available', h.q)
  redis.call('HINCRBY', buyers, h.u, -h.q)
  if sku_buyers and tonumber(redis.call('HGET', sale, 'sku_limit') or '0') > 0 then
    redis.call('HINCRBY', sku_buyers, h.u, -h.q)
  end
  return {'EXPIRED', '', h.s, 0}
end
if dep > 0 and h.s == 'held' then  -- the deposit: units stay held until the balance is paid or its window closes
  h.s = 'deposit'
  h.dr = ref
  h.d = now
  h.p = tonumber(pre[3])
  redis.call('HSET', holds, hid, cjson.encode(h))
  redis.call('ZADD', deadlines, h.p, hid)
  return {'DEPOSITED', hid, h.s, 1}
end
local cfg = redis.call('HMGET', sale, 'id', 'room', 'sku', 'price', 'currency')
if coupon ~= '' and (dep > 0 or discount > tonumber(cfg[4]) * h.q) then return {'INVALID', '', h.s, 0} end
h.s = 'confirmed'
h.pr = ref
h.c = now
if coupon ~= '' then
  h.cp = coupon
  h.dc = discount
end
local ref_user, ref_code = '', ''
if attribution ~= '' and not h.ch then
  local a_room, a_user, a_code = string.match(attribution, '^([^|]+)|([^|]+)|([^|]+)$')
  if a_room == cfg[2] and a_user ~= h.u and is_id(a_user) and is_id(a_code) then
    ref_user, ref_code = a_user, a_code
    h.at = a_user .. '|' .. a_code
  end
end
redis.call('HSET', holds, hid, cjson.encode(h))
redis.call('HINCRBY', sale, 'held', -h.q)
redis.call('HINCRBY', sale, 'sold', h.q)
-- a channel hold's order is of its channel (room_id = channel = the channel id); a room's, of its room
redis.call('XADD', outbox, '*', 'v', '1', 'order_id', hid, 'sale_id', cfg[1], 'room_id', h.ch and '' or cfg[2],
           'sku', cfg[3], 'user_id', h.u, 'qty', h.q, 'unit_price', cfg[4], 'currency', cfg[5],
           'payment_ref', ref, 'reserved_at', h.t, 'confirmed_at', now, 'channel', h.ch or cfg[2],
           'discount', h.dc or 0, 'coupon', h.cp or '', 'ref_user', ref_user, 'ref_code', ref_code)
return {'CONFIRMED', hid, h.s, 1}
