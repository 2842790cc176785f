-- publish.lua: give a room event the next sequence number, log it, update room state, publish it.
-- All in one script, so every gateway sees events in seq order and state matches seq.
-- KEYS[1] room meta hash (seq, epoch)       ls:room:{<room>}:meta
-- KEYS[2] room event log list (replay)       ls:room:{<room>}:log
-- KEYS[3] room state hash (field -> json)    ls:room:{<room>}:state
-- KEYS[4] room once-set (dedup names)        ls:room:{<room>}:once
-- ARGV[1] pub/sub channel   ARGV[2] event json object ("" = state change only, no event)
-- ARGV[3] log length kept   ARGV[4] dedup name ("" = none; a repeated name publishes nothing)
-- ARGV[5] number of state pairs, then field, value pairs (value "" deletes the field)
-- Returns {seq (0 = not published), epoch}
local meta, log, state, once = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local channel, ev, keep, dedup = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local npairs = tonumber(ARGV[5]) or 0
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = tostring(now) .. string.format('%03d', tonumber(t[2]) % 1000)
  redis.call('HSET', meta, 'epoch', epoch)
end
if dedup ~= '' and redis.call('SADD', once, dedup) == 0 then
  return {0, epoch}
end
for i = 1, npairs do
  local f, v = ARGV[5 + 2 * i - 1], ARGV[5 + 2 * i]
  if v == '' then redis.call('HDEL', state, f) else redis.call('HSET', state, f, v) end
end
if ev == '' then return {0, epoch} end
local seq = redis.call('HINCRBY', meta, 'seq', 1)
local msg = '{"seq":' .. seq .. ',"epoch":"' .. epoch .. '","ts":' .. now .. ',' .. string.sub(ev, 2)
redis.call('RPUSH', log, msg)
redis.call('LTRIM', log, -keep, -1)
redis.call('PUBLISH', channel, 'E' .. msg)
return {seq, epoch}
