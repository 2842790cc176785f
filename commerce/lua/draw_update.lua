-- draw_update.lua: one step of a draw's state machine (commerce/draws.py): written only by the
-- process holding the draw's lease (draw_lease.lua), only from the expected state, and not before
-- a given instant (Redis TIME), so a step is taken once even if two processes reach it.
-- KEYS[1] the draw's meta hash                                  ls:draw:{draw:<draw>}:meta
-- ARGV[1] lease token  ARGV[2] a field that must hold ARGV[3] ("" = no condition)
-- ARGV[4] not before this instant (ms, Redis TIME; 0 = any time)  ARGV[5] the hash's TTL (ms)
-- ARGV[6..] field, value pairs to set
-- Returns 1 written | 0 not (the lease is another's or lapsed, the state differs, or too early)
local meta = KEYS[1]
local token, field, want, not_before, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('HGET', meta, 'lease') ~= token then return 0 end
if field ~= '' and redis.call('HGET', meta, field) ~= want then return 0 end
if not_before > 0 then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) < not_before then return 0 end
end
if #ARGV > 5 then redis.call('HSET', meta, unpack(ARGV, 6)) end
redis.call('PEXPIRE', meta, ttl)
return 1
