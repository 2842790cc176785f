-- reserve.lua: take stock out of `available` into a hold, for one or many requests (the burst path).
-- KEYS[1] sale hash   KEYS[2] buyers hash (user -> units held or sold)
-- KEYS[3] holds hash (hold_id -> json)   KEYS[4] idempotency hash (user_id|request_id -> json)
-- Hold records (field hold_id, value JSON with short keys u q p s r t c pr x): inventory/holds.py
-- KEYS[5] deadlines zset (hold_id -> pay_by_ms)
-- KEYS[6] (a pool-backed sale only) the pool's per-SKU buyers hash (user -> units of the SKU in every room
-- and channel): with the sale's `sku_limit` > 0 a user's units there count against it too (LIMIT)
-- ARGV[1] max qty per request  ARGV[2] channel ('' = the sale's room; else a channel id such as `web-shop`,
-- recorded in each hold as `ch` and on its order), then per request 4 args: hold_id, request_id, user_id, qty
-- Returns one {code, hold_id, pay_by_ms, available, user_units, replayed} per request, in order;
-- replayed is 1 when the answer is the remembered one of an earlier request with the same id (a
-- retry: nothing was decided or changed now), else 0.
-- code RESERVED | NOT_STARTED | ENDED | SOLD_OUT | LIMIT | INVALID | NOT_FOUND | IDEM_MISMATCH
-- Open/close is decided here with Redis TIME; no partial fills; bad input writes nothing.
-- Requests are decided one after another, exactly as if each were its own call; the reads are done
-- up front with one HMGET per hash and the writes at the end with one multi-field command per key
-- (a redis.call costs several microseconds; per request it was 7 of them, per batch it is now ~9).
local sale, buyers, holds, idem, deadlines, sku_buyers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local max_qty = parse_pos_int(ARGV[1], 1e9) or 1
local channel = ARGV[2]
local n = math.floor((#ARGV - 2) / 4)
local out = {}
if not sale_exists(sale) then
  for i = 1, n do out[i] = {'NOT_FOUND', '', 0, 0, 0, 0} end
  return out
end
if channel ~= '' and not is_id(channel) then
  for i = 1, n do out[i] = {'INVALID', '', 0, 0, 0, 0} end
  return out
end
local ch = channel == '' and '' or string.format(',"ch":"%s"', channel)
-- every other key must be absent or of its type, so no write below can fail halfway
local function kind_ok(k, want) return k == 'none' or k == want end
if not (kind_ok(redis.call('TYPE', buyers).ok, 'hash') and kind_ok(redis.call('TYPE', holds).ok, 'hash')
        and kind_ok(redis.call('TYPE', idem).ok, 'hash') and kind_ok(redis.call('TYPE', deadlines).ok, 'zset')) then
  for i = 1, n do out[i] = {'INVALID', '', 0, 0, 0, 0} end
  return out
end

-- one command over many fields, in chunks (unpack has a stack limit)
local CHUNK = 1000
local function many(cmd, key, list)
  local replies = {}
  for s = 1, #list, CHUNK do
    local r = redis.call(cmd, key, unpack(list, s, math.min(#list, s + CHUNK - 1)))
    if type(r) == 'table' then
      for j = 1, #r do replies[#replies + 1] = r[j] end
    end
  end
  return replies
end

local cfg = redis.call('HMGET', sale, 'starts_at', 'ends_at', 'limit', 'hold_ttl', 'available', 'sku_limit')
local starts, ends, limit, ttl = tonumber(cfg[1]), tonumber(cfg[2]), tonumber(cfg[3]), tonumber(cfg[4])
local available = tonumber(cfg[5])
local sku_limit = sku_buyers and tonumber(cfg[6] or '0') or 0  -- the pool's per-user limit per SKU (0: none)
if sku_limit > 0 and not kind_ok(redis.call('TYPE', sku_buyers).ok, 'hash') then  -- checked only when used
  for i = 1, n do out[i] = {'INVALID', '', 0, 0, 0, 0} end
  return out
end
local now = now_ms()
local open = now >= starts and now < ends

-- pass 1: validate; gather the fields to read. Ids are checked for their characters all at once
-- (one pattern search over the joined arguments); only a batch that has a bad character anywhere
-- checks each id on its own.
local all_clean = n > 0 and table.concat(ARGV, '', 3, 2 + n * 4):find('[^%w_%.:@%-]') == nil
local function ok_id(s)
  if all_clean then return #s >= 1 and #s <= 128 end
  return is_id(s)
end
local reqs, ikeys, users, hids, user_seen = {}, {}, {}, {}, {}
for i = 1, n do
  local b = 2 + (i - 1) * 4
  local hid, rid, user = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local qty = parse_pos_int(ARGV[b + 4], max_qty)
  if qty and ok_id(hid) and ok_id(rid) and ok_id(user) then
    local ikey = user .. '|' .. rid  -- request ids are scoped per user: viewers can't collide
    reqs[i] = {hid, user, qty, ikey, rid}
    ikeys[#ikeys + 1] = ikey
    hids[#hids + 1] = hid
    if not user_seen[user] then
      user_seen[user] = true
      users[#users + 1] = user
    end
  end
end

local prior, units_of, hid_taken, sku_units_of = {}, {}, {}, {}
if #ikeys > 0 then
  local r = many('HMGET', idem, ikeys)
  for j = 1, #ikeys do if r[j] then prior[ikeys[j]] = r[j] end end
  r = many('HMGET', buyers, users)
  for j = 1, #users do units_of[users[j]] = tonumber(r[j] or '0') end
  if sku_limit > 0 then
    r = many('HMGET', sku_buyers, users)
    for j = 1, #users do sku_units_of[users[j]] = tonumber(r[j] or '0') end
  end
  if open then
    r = many('HMGET', holds, hids)
    for j = 1, #hids do if r[j] then hid_taken[hids[j]] = true end end
  end
end

-- pass 2: decide, in order; writes are collected and applied once at the end
local w_holds, w_deadlines, w_idem, touched, fresh = {}, {}, {}, {}, {}
local taken = 0
local pay_by = now + ttl
for i = 1, n do
  local q = reqs[i]
  if not q then
    out[i] = {'INVALID', '', 0, available, 0, 0}
  else
    local hid, user, qty, ikey, rid = q[1], q[2], q[3], q[4], q[5]
    local p = fresh[ikey] or (prior[ikey] and cjson.decode(prior[ikey]))
    if p then
      if p.u == user and p.q == qty then
        out[i] = {p.c, p.h, p.p, available, units_of[user], 1}
      else
        out[i] = {'IDEM_MISMATCH', '', 0, available, 0, 1}
      end
    elseif now < starts then  -- clock answers are not remembered: the same rid may reserve at the open
      out[i] = {'NOT_STARTED', '', starts, available, 0, 0}
    elseif now >= ends then
      out[i] = {'ENDED', '', ends, available, 0, 0}
    elseif hid_taken[hid] then
      out[i] = {'INVALID', '', 0, available, 0, 0}
    else
      local units = units_of[user]
      local rec
      if units + qty > limit or (sku_limit > 0 and sku_units_of[user] + qty > sku_limit) then
        -- the per-user limits first (the sale's; the pool's per SKU): the answer whatever is left
        rec = {c = 'LIMIT', h = '', p = 0, u = user, q = qty}
      elseif available < qty then
        rec = {c = 'SOLD_OUT', h = '', p = 0, u = user, q = qty}
      else
        rec = {c = 'RESERVED', h = hid, p = pay_by, u = user, q = qty}
        available = available - qty
        taken = taken + qty
        units = units + qty
        units_of[user] = units
        if sku_limit > 0 then sku_units_of[user] = sku_units_of[user] + qty end
        touched[user] = true
        hid_taken[hid] = true
        w_holds[#w_holds + 1] = hid
        -- ids are of [A-Za-z0-9_.:@-] (checked above), so this is valid JSON without escaping
        w_holds[#w_holds + 1] = string.format('{"u":"%s","q":%d,"p":%d,"s":"held","r":"%s","t":%d%s}',
          user, qty, pay_by, rid, now, ch)
        w_deadlines[#w_deadlines + 1] = pay_by
        w_deadlines[#w_deadlines + 1] = hid
      end
      fresh[ikey] = rec
      w_idem[#w_idem + 1] = ikey
      w_idem[#w_idem + 1] = string.format('{"c":"%s","h":"%s","p":%d,"u":"%s","q":%d}', rec.c, rec.h, rec.p,
        user, qty)
      out[i] = {rec.c, rec.h, rec.p, available, units, 0}
    end
  end
end

if taken > 0 then
  local w_buyers = {}
  for user in pairs(touched) do
    w_buyers[#w_buyers + 1] = user
    w_buyers[#w_buyers + 1] = string.format('%d', units_of[user])
  end
  many('HSET', buyers, w_buyers)
  if sku_limit > 0 then
    local w_sku = {}
    for user in pairs(touched) do
      w_sku[#w_sku + 1] = user
      w_sku[#w_sku + 1] = string.format('%d', sku_units_of[user])
    end
    many('HSET', sku_buyers, w_sku)
  end
  many('HSET', holds, w_holds)
  many('ZADD', deadlines, w_deadlines)
  redis.call('HINCRBY', sale, 'available', -taken)
  redis.call('HINCRBY', sale, 'held', taken)
end
if #w_idem > 0 then many('HSET', idem, w_idem) end
return out
