-- poll_vote.lua: one viewer's vote in a poll, decided atomically (one vote per viewer per poll).
-- KEYS[1] the poll's meta hash   ls:poll:{poll:<poll>}:meta
-- KEYS[2] the poll's votes hash (user -> option index)   ls:poll:{poll:<poll>}:votes
-- KEYS[3] the poll's counts hash (option index -> votes)  ls:poll:{poll:<poll>}:counts
-- ARGV[1] user id  ARGV[2] option (0-based index)  ARGV[3] the voter's room ('' = any room: over HTTP)
-- Returns {code, room, option (-1: none), counts...} (counts: votes per option after this call);
-- code VOTED | ALREADY_VOTED (option: the vote that counted; nothing changes) | CLOSED (closed, or
-- Redis TIME >= ends_at) | INVALID (no such option) | NOT_FOUND (no such poll, or not in ARGV[3]'s room:
-- only {code, ''})
local meta, votes, counts = KEYS[1], KEYS[2], KEYS[3]
local user, room = ARGV[1], ARGV[3]
local m = redis.call('HMGET', meta, 'room', 'n', 'ends_at', 'state', 'expire_at')
if not m[1] or (room ~= '' and m[1] ~= room) then return {'NOT_FOUND', ''} end
local n, ends_at = tonumber(m[2]), tonumber(m[3])
local fields = {}
for i = 1, n do fields[i] = tostring(i - 1) end
local c = redis.call('HMGET', counts, unpack(fields))
local out = {'', m[1], -1}
for i = 1, n do out[3 + i] = tonumber(c[i] or '0') end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if m[4] ~= 'open' or now >= ends_at then out[1] = 'CLOSED' return out end
local option = tonumber(ARGV[2])
if not option or option < 0 or option >= n or option ~= math.floor(option) then out[1] = 'INVALID' return out end
if redis.call('HSETNX', votes, user, option) == 0 then
  out[1], out[3] = 'ALREADY_VOTED', tonumber(redis.call('HGET', votes, user))
  return out
end
redis.call('HINCRBY', counts, tostring(option), 1)
local expire_at = tonumber(m[5])
redis.call('PEXPIREAT', votes, expire_at)
redis.call('PEXPIREAT', counts, expire_at)
out[1], out[3] = 'VOTED', option
out[4 + option] = out[4 + option] + 1
return out
