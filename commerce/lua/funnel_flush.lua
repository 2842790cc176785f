-- funnel_flush.lua: one flush of a room's live funnel (commerce/funnel.py): request counters and the unique
-- viewers of each step (HyperLogLogs), then the room's TTL on all of them, the way publish.lua sets it.
-- KEYS[1] room meta hash (field `ended`)  KEYS[2] funnel hash  KEYS[3..6] the steps' HyperLogLogs
-- ARGV[1] room window ms  ARGV[2] ended window ms  ARGV[3] number of counter pairs, then field, n pairs;
-- then for each of the 4 steps: a count k, then k user ids
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
for s = 1, 4 do
  local n = tonumber(ARGV[i])
  i = i + 1
  if n > 0 then
    redis.call('PFADD', KEYS[2 + s], unpack(ARGV, i, i + n - 1))
    i = i + n
  end
end
local ttl = tonumber(ARGV[1])
if redis.call('HEXISTS', KEYS[1], 'ended') == 1 then ttl = tonumber(ARGV[2]) end
for k = 2, 6 do redis.call('PEXPIRE', KEYS[k], ttl) end
return 0
