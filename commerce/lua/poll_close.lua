-- poll_close.lua: close a poll, decided once: only the call that turns it from open to closed gets CLOSED.
-- KEYS[1] the poll's meta hash   ls:poll:{poll:<poll>}:meta
-- KEYS[2] the poll's counts hash (option index -> votes)  ls:poll:{poll:<poll>}:counts
-- ARGV[1] room ('' = any: the deadline's close)  ARGV[2] 'now' (the host closes it) | 'due' (its deadline:
-- only once Redis TIME >= ends_at)
-- Returns {code, now, room, question, options, opened_at, ends_at, state, closed_at, counts...};
-- code CLOSED (closed by this call: closed_at = min(now, ends_at), as no vote counts after ends_at) |
-- ALREADY (closed before: the final poll) | NOT_DUE (a 'due' call before ends_at: nothing changes) |
-- NOT_FOUND (no such poll, or another room's: only {code})
local meta, counts = KEYS[1], KEYS[2]
local room, mode = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local m = redis.call('HMGET', meta, 'room', 'question', 'options', 'n', 'opened_at', 'ends_at', 'state', 'closed_at')
if not m[1] or (room ~= '' and m[1] ~= room) then return {'NOT_FOUND'} end
local ends_at = tonumber(m[6])
local code, state, closed_at = 'ALREADY', m[7], tonumber(m[8] or '0')
if state == 'open' then
  if mode == 'due' and now < ends_at then
    code = 'NOT_DUE'
  else
    code, state, closed_at = 'CLOSED', 'closed', math.min(now, ends_at)
    redis.call('HSET', meta, 'state', state, 'closed_at', closed_at)
  end
end
local out = {code, now, m[1], m[2], m[3], tonumber(m[5]), ends_at, state, closed_at}
local n = tonumber(m[4])
local fields = {}
for i = 1, n do fields[i] = tostring(i - 1) end
local c = redis.call('HMGET', counts, unpack(fields))
for i = 1, n do out[#out + 1] = tonumber(c[i] or '0') end
return out
