-- team_join.lua: a viewer joins (or switches to) one of the room's fan teams, atomically.
-- KEYS[1] the room's team members hash (user -> "<team>|<joined ms>")   ls:room:{<room>}:team:members
-- KEYS[2] the room's team stats hash ("<team>:members" -> int, ...)     ls:room:{<room>}:team:stats
-- ARGV[1] user id  ARGV[2] team id (the caller checked it is one of the room's teams)
-- ARGV[3] "1" switching allowed | "0" not  ARGV[4] switch cooldown (ms)  ARGV[5] keys' TTL (ms)
-- Returns {code, team, joined_at, switch_at (-1: never), previous team ("" = none)};
-- code JOINED (also for the team the viewer is already in: nothing changes) | TEAM_LOCKED | TEAM_COOLDOWN
local members, stats = KEYS[1], KEYS[2]
local user, team, allow, cooldown, ttl = ARGV[1], ARGV[2], ARGV[3] == '1', tonumber(ARGV[4]), tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HGET', members, user)
local prev = ''
if cur then
  local sep = string.find(cur, '|', 1, true)
  prev = string.sub(cur, 1, sep - 1)
  local at = tonumber(string.sub(cur, sep + 1))
  local switch_at = allow and (at + cooldown) or -1
  if prev == team then return {'JOINED', team, at, switch_at, ''} end
  if not allow then return {'TEAM_LOCKED', prev, at, -1, ''} end
  if now < at + cooldown then return {'TEAM_COOLDOWN', prev, at, at + cooldown, ''} end
  redis.call('HINCRBY', stats, prev .. ':members', -1)
end
redis.call('HSET', members, user, team .. '|' .. now)
redis.call('HINCRBY', stats, team .. ':members', 1)
redis.call('PEXPIRE', members, ttl)
redis.call('PEXPIRE', stats, ttl)
return {'JOINED', team, now, allow and (now + cooldown) or -1, prev}
