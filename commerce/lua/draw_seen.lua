-- draw_seen.lua: the viewers connected to the draw's room on one gateway (its ticker, every second),
-- recorded while entries are open: an entrant counts as present at the draw when seen shortly
-- before entries close (commerce/draws.py PRESENT_MS). Nothing is recorded once entries closed, so a
-- viewer who comes back after the close never counts as present at the draw.
-- KEYS[1] the draw's meta hash (state, until)                   ls:draw:{draw:<draw>}:meta
-- KEYS[2] the draw's presence zset (user -> last seen, ms)      ls:draw:{draw:<draw>}:present
-- ARGV[1] keys' TTL (ms), then the user ids
-- Returns how many users were recorded (0: entries are closed or the draw is unknown)
local meta, present = KEYS[1], KEYS[2]
local ttl = tonumber(ARGV[1])
local m = redis.call('HMGET', meta, 'state', 'until')
if m[1] ~= 'open' then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now >= tonumber(m[2]) then return 0 end
local CHUNK = 500  -- score/member pairs per ZADD (unpack has a stack limit)
local n = #ARGV - 1
for s = 2, #ARGV, CHUNK do
  local args = {}
  for i = s, math.min(#ARGV, s + CHUNK - 1) do
    args[#args + 1] = now
    args[#args + 1] = ARGV[i]
  end
  redis.call('ZADD', present, unpack(args))
end
if n > 0 then redis.call('PEXPIRE', present, ttl) end
return n
