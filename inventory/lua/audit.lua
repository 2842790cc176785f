-- audit.lua: read-only, atomic snapshot of a sale's counters and the sums they must agree with.
-- KEYS[1] sale hash  KEYS[2] buyers hash  KEYS[3] holds hash
-- Hold records (field hold_id, value JSON with short keys u q p s r t c pr x): inventory/holds.py
-- ARGV (none)
-- Returns {found, allocated, available, held, sold, sum_held_holds, sum_confirmed_holds, sum_buyers,
--          max_user_units, limit}
local sale, buyers, holds = KEYS[1], KEYS[2], KEYS[3]
if not sale_exists(sale) then return {0, 0, 0, 0, 0, 0, 0, 0, 0, 0} end
local c = redis.call('HMGET', sale, 'allocated', 'available', 'held', 'sold', 'limit')
local held, sold = 0, 0
local all = redis.call('HVALS', holds)
for _, raw in ipairs(all) do
  local h = cjson.decode(raw)
  if h.s == 'held' or h.s == 'deposit' then held = held + h.q elseif h.s == 'confirmed' then sold = sold + h.q end
end
local sum, maxu = 0, 0
local b = redis.call('HVALS', buyers)
for _, v in ipairs(b) do
  local u = tonumber(v)
  sum = sum + u
  if u > maxu then maxu = u end
end
return {1, tonumber(c[1]), tonumber(c[2]), tonumber(c[3]), tonumber(c[4]), held, sold, sum, maxu, tonumber(c[5])}
