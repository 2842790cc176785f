-- bucket_take.lua: a hot-SKU bucket receives units another bucket of the same sale lent it (bucket_lend.lua),
-- exactly once per transfer id: the units join `available` and `allocated` together (available + held +
-- sold == allocated still holds), and the transfer id is remembered in `borrowed`, so a second take of the
-- same transfer (the caller's retry, or the reaper's recovery racing the caller) changes nothing.
-- KEYS[1] the receiving bucket's sale hash   KEYS[2] its borrowed hash (transfer id -> "from|units|ms")
-- ARGV[1] transfer id  ARGV[2] units (>= 1, as lent)  ARGV[3] the lending bucket's sale id
-- Returns {code, available}; code TAKEN | REPLAYED (taken before: nothing changed) | NOT_FOUND | INVALID
local sale, borrowed = KEYS[1], KEYS[2]
local tid, from = ARGV[1], ARGV[3]
local units = parse_pos_int(ARGV[2], 1e9)
if not (is_id(tid) and is_id(from) and units) then return {'INVALID', 0} end
if not sale_exists(sale) then return {'NOT_FOUND', 0} end
local kind = redis.call('TYPE', borrowed).ok
if kind ~= 'none' and kind ~= 'hash' then return {'INVALID', 0} end
if redis.call('HEXISTS', borrowed, tid) == 1 then
  return {'REPLAYED', tonumber(redis.call('HGET', sale, 'available'))}
end
redis.call('HINCRBY', sale, 'allocated', units)
local available = redis.call('HINCRBY', sale, 'available', units)
redis.call('HSET', borrowed, tid, string.format('%s|%d|%d', from, units, now_ms()))
return {'TAKEN', available}
