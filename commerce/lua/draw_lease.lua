-- draw_lease.lua: one process at a time advances a draw (its close, draw, prizes and redraw rounds,
-- commerce/draws.py); the lease lapses by itself if that process stops.
-- KEYS[1] the draw's meta hash (fields lease, lease_until)      ls:draw:{draw:<draw>}:meta
-- ARGV[1] the caller's token  ARGV[2] lease length (ms)  ARGV[3] take | drop
-- Returns take: 1 taken (or renewed: the same token), 0 held by another process, -1 no such draw;
--   drop: 1 dropped, 0 not held by this token
local meta = KEYS[1]
local token, ms, op = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local m = redis.call('HMGET', meta, 'state', 'lease', 'lease_until')
if op == 'drop' then
  if m[2] == token then
    redis.call('HDEL', meta, 'lease', 'lease_until')
    return 1
  end
  return 0
end
if not m[1] then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if m[2] and m[2] ~= token and now < tonumber(m[3]) then return 0 end
redis.call('HSET', meta, 'lease', token, 'lease_until', now + ms)
return 1
