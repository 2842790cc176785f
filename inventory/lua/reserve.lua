-- reserve.lua: take stock out of `available` into a hold, for one or many requests (the burst path).
-- KEYS[1] sale hash   KEYS[2] buyers hash (user -> units held or sold)
-- KEYS[3] holds hash (hold_id -> json)   KEYS[4] idempotency hash (user_id|request_id -> json)
-- KEYS[5] deadlines zset (hold_id -> pay_by_ms)
-- ARGV[1] max qty per request, then per request 4 args: hold_id, request_id, user_id, qty
-- Returns one {code, hold_id, pay_by_ms, available, user_units} per request, in order.
-- code RESERVED | NOT_STARTED | ENDED | SOLD_OUT | LIMIT | INVALID | NOT_FOUND | IDEM_MISMATCH
-- Open/close is decided here with Redis TIME; no partial fills; bad input writes nothing.
local sale, buyers, holds, idem, deadlines = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local max_qty = parse_pos_int(ARGV[1], 1e9) or 1
local n = math.floor((#ARGV - 1) / 4)
local out = {}
if not sale_exists(sale) then
  for i = 1, n do out[i] = {'NOT_FOUND', '', 0, 0, 0} end
  return out
end
-- every other key must be absent or of its type, so no write below can fail halfway
local function kind_ok(k, want) return k == 'none' or k == want end
if not (kind_ok(redis.call('TYPE', buyers).ok, 'hash') and kind_ok(redis.call('TYPE', holds).ok, 'hash')
        and kind_ok(redis.call('TYPE', idem).ok, 'hash') and kind_ok(redis.call('TYPE', deadlines).ok, 'zset')) then
  for i = 1, n do out[i] = {'INVALID', '', 0, 0, 0} end
  return out
end
local cfg = redis.call('HMGET', sale, 'starts_at', 'ends_at', 'limit', 'hold_ttl')
local starts, ends, limit, ttl = tonumber(cfg[1]), tonumber(cfg[2]), tonumber(cfg[3]), tonumber(cfg[4])
local available = tonumber(redis.call('HGET', sale, 'available'))
local now = now_ms()
local taken = 0
for i = 1, n do
  local b = 1 + (i - 1) * 4
  local hid, rid, user, qs = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local qty = parse_pos_int(qs, max_qty)
  if not (is_id(hid) and is_id(rid) and is_id(user) and qty) then
    out[i] = {'INVALID', '', 0, available, 0}
  else
    local ikey = user .. '|' .. rid  -- request ids are scoped per user: viewers can't collide
    local prior = redis.call('HGET', idem, ikey)
    if prior then
      local p = cjson.decode(prior)
      if p.u == user and p.q == qty then
        out[i] = {p.c, p.h, p.p, available, tonumber(redis.call('HGET', buyers, user) or '0')}
      else
        out[i] = {'IDEM_MISMATCH', '', 0, available, 0}
      end
    elseif now < starts then
      out[i] = {'NOT_STARTED', '', starts, available, 0}
    elseif now >= ends then
      out[i] = {'ENDED', '', ends, available, 0}
    elseif redis.call('HEXISTS', holds, hid) == 1 then
      out[i] = {'INVALID', '', 0, available, 0}
    else
      local units = tonumber(redis.call('HGET', buyers, user) or '0')
      local code
      if available < qty then
        code = 'SOLD_OUT'
      elseif units + qty > limit then
        code = 'LIMIT'
      else
        code = 'RESERVED'
      end
      if code == 'RESERVED' then
        local pay_by = now + ttl
        available = available - qty
        taken = taken + qty
        units = redis.call('HINCRBY', buyers, user, qty)
        redis.call('HSET', holds, hid, cjson.encode({u = user, q = qty, p = pay_by, s = 'held', r = rid, t = now}))
        redis.call('ZADD', deadlines, pay_by, hid)
        redis.call('HSET', idem, ikey, cjson.encode({c = code, h = hid, p = pay_by, u = user, q = qty}))
        out[i] = {code, hid, pay_by, available, units}
      else
        redis.call('HSET', idem, ikey, cjson.encode({c = code, h = '', p = 0, u = user, q = qty}))
        out[i] = {code, '', 0, available, units}
      end
    end
  end
end
if taken > 0 then
  redis.call('HINCRBY', sale, 'available', -taken)
  redis.call('HINCRBY', sale, 'held', taken)
end
return out
