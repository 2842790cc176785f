-- publish.lua: give a room event the next sequence number, log it, update room state, publish it.
-- All in one script, so every gateway sees events in seq order and state matches seq. Every call
-- (an event, a state change or only a touch) also sets the TTL of all the room's keys: the room
-- window (ARGV[5]) while the room is not ended, the ended window (ARGV[6]) once it is (meta field
-- `ended`, set and cleared through ARGV[7]), so a room nobody uses any more disappears.
-- KEYS[1] room meta hash (seq, epoch, ended)  ls:room:{<room>}:meta
-- KEYS[2] room event log list (replay)       ls:room:{<room>}:log
-- KEYS[3] room state hash (field -> json)    ls:room:{<room>}:state
-- KEYS[4] room once-set (dedup names)        ls:room:{<room>}:once
-- KEYS[5..8] comments list, likes counter, viewers hash, funnel hash (only their TTL is set here)
-- ARGV[1] pub/sub channel   ARGV[2] event json object ("" = state change only, no event)
-- ARGV[3] log length kept   ARGV[4] dedup name ("" = none; a repeated name publishes nothing)
-- ARGV[5] room window ms (TTL while not ended)   ARGV[6] ended window ms
-- ARGV[7] "" = no change | "1" = the room ended (ended window from now on) | "0" = live again
-- ARGV[8] number of state pairs, then field, value pairs (value "" deletes the field)
-- Returns {seq (0 = not published), epoch}
local meta, log, state, once = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local channel, ev, keep, dedup = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local live_ttl, ended_ttl, ended_flag = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local npairs = tonumber(ARGV[8]) or 0
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = tostring(now) .. string.format('%03d', tonumber(t[2]) % 1000)
  redis.call('HSET', meta, 'epoch', epoch)
end
if ended_flag == '1' then redis.call('HSET', meta, 'ended', '1')
elseif ended_flag == '0' then redis.call('HDEL', meta, 'ended') end
local function expire_all()
  local ttl = redis.call('HEXISTS', meta, 'ended') == 1 and ended_ttl or live_ttl
  if ttl and ttl > 0 then
    for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, ttl) end
  end
end
if dedup ~= '' and redis.call('SADD', once, dedup) == 0 then
  expire_all()
  return {0, epoch}
end
for i = 1, npairs do
  local f, v = ARGV[8 + 2 * i - 1], ARGV[8 + 2 * i]
  if v == '' then redis.call('HDEL', state, f) else redis.call('HSET', state, f, v) end
end
if ev ~= '' then
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  local msg = '{"seq":' .. seq .. ',"epoch":"' .. epoch .. '","ts":' .. now .. ',' .. string.sub(ev, 2)
  redis.call('RPUSH', log, msg)
  redis.call('LTRIM', log, -keep, -1)
  redis.call('SPUBLISH', channel, 'E' .. msg)
  expire_all()
  return {seq, epoch}
end
expire_all()
return {0, epoch}
