-- poll_vote.lua: viewers' votes in one poll, one or many per call (the burst path), each decided in order as
-- if alone: one vote per viewer per poll.
-- KEYS[1] the poll's meta hash   ls:poll:{poll:<poll>}:meta
-- KEYS[2] the poll's votes hash (user -> option index)   ls:poll:{poll:<poll>}:votes
-- KEYS[3] the poll's counts hash (option index -> votes)  ls:poll:{poll:<poll>}:counts
-- ARGV[1] the voters' room ('' = any room: over HTTP), then per vote 2 args: user id, option (0-based index)
-- Returns {room, {counts...}, {code, option (-1: none)} per vote}: counts = votes per option after the call;
-- code VOTED | ALREADY_VOTED (option: the vote that counted; nothing changes) | CLOSED (closed, or Redis TIME
-- >= ends_at) | INVALID (no such option) | NOT_FOUND (no such poll, or not in ARGV[1]'s room; room '' then)
local meta, votes, counts = KEYS[1], KEYS[2], KEYS[3]
local room = ARGV[1]
local nv = math.floor((#ARGV - 1) / 2)
local m = redis.call('HMGET', meta, 'room', 'n', 'ends_at', 'state', 'expire_at')
local out = {'', {}}
if not m[1] or (room ~= '' and m[1] ~= room) then
  for i = 1, nv do out[2 + i] = {'NOT_FOUND', -1} end
  return out
end
out[1] = m[1]
local n, ends_at = tonumber(m[2]), tonumber(m[3])
local fields = {}
for i = 1, n do fields[i] = tostring(i - 1) end
local c = redis.call('HMGET', counts, unpack(fields))
local tally = {}
for i = 1, n do tally[i] = tonumber(c[i] or '0') end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local closed = m[4] ~= 'open' or now >= ends_at
local added = 0
for i = 1, nv do
  local user, option = ARGV[2 * i], tonumber(ARGV[2 * i + 1])
  if closed then
    out[2 + i] = {'CLOSED', -1}
  elseif not option or option < 0 or option >= n or option ~= math.floor(option) then
    out[2 + i] = {'INVALID', -1}
  elseif redis.call('HSETNX', votes, user, option) == 0 then
    out[2 + i] = {'ALREADY_VOTED', tonumber(redis.call('HGET', votes, user))}
  else
    redis.call('HINCRBY', counts, tostring(option), 1)
    tally[option + 1] = tally[option + 1] + 1
    added = added + 1
    out[2 + i] = {'VOTED', option}
  end
end
if added > 0 then
  local expire_at = tonumber(m[5])
  redis.call('PEXPIREAT', votes, expire_at)
  redis.call('PEXPIREAT', counts, expire_at)
end
out[2] = tally
return out
