-- bucket_lend.lua: a hot-SKU bucket lends some of its available units to another bucket of the same sale
-- (the first half of a move between buckets; bucket_take.lua on the receiver is the second). The units
-- leave `available` and `allocated` together, so available + held + sold == allocated still holds here,
-- and are recorded in `lent` under the transfer id until the receiver has them (then the caller, or the
-- reaper's recovery of a move a crash left half done, deletes the record). Idempotent by transfer id.
-- KEYS[1] the donor bucket's sale hash   KEYS[2] the donor's lent hash (transfer id -> "to|units|ms")
-- ARGV[1] transfer id  ARGV[2] the receiving bucket's sale id  ARGV[3] units wanted (>= 1)
-- ARGV[4] (optional) '1': replay only -- a recovery confirming a lend it read: if the record is gone (its mover
--   finished the move and deleted it meanwhile), answer GONE and lend nothing (a fresh lend under a transfer id
--   the receiver already took would take units out that never arrive anywhere)
-- Lends min(available, max(wanted, floor(available / 2))): at least what the receiver's buyers asked for,
-- up to half of what the donor has, so the buckets stay roughly even near the end of a sale.
-- Returns {code, units, available}; code LENT (units may be 0: nothing to lend, nothing recorded)
--   | REPLAYED (this transfer id was lent before: its units) | GONE (replay only, no record) | NOT_FOUND | INVALID
local sale, lent = KEYS[1], KEYS[2]
local tid, to = ARGV[1], ARGV[2]
local wanted = parse_pos_int(ARGV[3], 1e9)
if not (is_id(tid) and is_id(to) and wanted) then return {'INVALID', 0, 0} end
if not sale_exists(sale) then return {'NOT_FOUND', 0, 0} end
local kind = redis.call('TYPE', lent).ok
if kind ~= 'none' and kind ~= 'hash' then return {'INVALID', 0, 0} end
local available = tonumber(redis.call('HGET', sale, 'available'))
local prior = redis.call('HGET', lent, tid)
if prior then
  local units = tonumber(prior:match('^[^|]*|(%d+)|'))
  return {'REPLAYED', units, available}
end
if ARGV[4] == '1' then return {'GONE', 0, available} end
local units = math.max(wanted, math.floor(available / 2))
if units > available then units = available end
if units <= 0 then return {'LENT', 0, available} end
redis.call('HINCRBY', sale, 'available', -units)
redis.call('HINCRBY', sale, 'allocated', -units)
redis.call('HSET', lent, tid, string.format('%s|%d|%d', to, units, now_ms()))
return {'LENT', units, available - units}
