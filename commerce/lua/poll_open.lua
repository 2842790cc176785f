-- poll_open.lua: open a poll (once per poll id), its clock and options fixed here.
-- KEYS[1] the poll's meta hash (room, question, options, n, opened_at, ends_at, state, closed_at,
--         expire_at)                                                 ls:poll:{poll:<poll>}:meta
-- KEYS[2] the poll's votes hash (user -> option)                      ls:poll:{poll:<poll>}:votes
-- KEYS[3] the poll's counts hash (option index -> votes)              ls:poll:{poll:<poll>}:counts
-- ARGV[1] room id  ARGV[2] question  ARGV[3] options (JSON list)  ARGV[4] number of options
-- ARGV[5] duration (ms)  ARGV[6] retention (ms): the keys expire this long after ends_at
-- Returns {code, now, room, question, options, opened_at, ends_at, state, closed_at (0: open), counts...};
-- code OPENED (opened now: opened_at = now, Redis TIME) | EXISTS (the poll id is taken: its poll, untouched,
-- whichever room it is in; the caller compares)
local meta, votes, counts = KEYS[1], KEYS[2], KEYS[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function answer(code)
  local m = redis.call('HMGET', meta, 'room', 'question', 'options', 'n', 'opened_at', 'ends_at', 'state', 'closed_at')
  local out = {code, now, m[1], m[2], m[3], tonumber(m[5]), tonumber(m[6]), m[7], tonumber(m[8] or '0')}
  local n = tonumber(m[4])
  local fields = {}
  for i = 1, n do fields[i] = tostring(i - 1) end
  local c = redis.call('HMGET', counts, unpack(fields))
  for i = 1, n do out[#out + 1] = tonumber(c[i] or '0') end
  return out
end

if redis.call('EXISTS', meta) == 1 then return answer('EXISTS') end
local n, duration, retain = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local ends_at = now + duration
local expire_at = ends_at + retain
redis.call('HSET', meta, 'room', ARGV[1], 'question', ARGV[2], 'options', ARGV[3], 'n', n,
           'opened_at', now, 'ends_at', ends_at, 'state', 'open', 'closed_at', 0, 'expire_at', expire_at)
redis.call('PEXPIREAT', meta, expire_at)
-- a poll id is never reused: votes and counts of an earlier poll of this id (its meta expired first) go
redis.call('DEL', votes, counts)
return answer('OPENED')
