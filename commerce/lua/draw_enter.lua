-- draw_enter.lua: a viewer enters a lucky draw, atomically: once per viewer, only while entries are open.
-- KEYS[1] the draw's meta hash (state, until, ...)              ls:draw:{draw:<draw>}:meta
-- KEYS[2] the draw's entrants hash (user -> entry id)           ls:draw:{draw:<draw>}:entrants
-- KEYS[3] the draw's presence zset (user -> last seen, ms)      ls:draw:{draw:<draw>}:present
-- ARGV[1] user id  ARGV[2] the user's entry id (masked: commerce/draw_proof.py)  ARGV[3] keys' TTL (ms)
-- The caller checked the entry rule; the entrant is connected now, so the entry also counts as seen.
-- Returns {code, entry id, entrants}; code ENTERED | ALREADY_ENTERED (entry id: the one entered before)
--   | ENDED (state not open, or Redis TIME at or past `until`) | NOT_FOUND (no draw, or not announced yet)
local meta, entrants, present = KEYS[1], KEYS[2], KEYS[3]
local user, eid, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local m = redis.call('HMGET', meta, 'state', 'until')
if not m[1] or m[1] == 'new' then return {'NOT_FOUND', '', 0} end
local prev = redis.call('HGET', entrants, user)
if prev then return {'ALREADY_ENTERED', prev, redis.call('HLEN', entrants)} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if m[1] ~= 'open' or now >= tonumber(m[2]) then return {'ENDED', '', redis.call('HLEN', entrants)} end
redis.call('HSET', entrants, user, eid)
redis.call('ZADD', present, now, user)
redis.call('PEXPIRE', entrants, ttl)
redis.call('PEXPIRE', present, ttl)
return {'ENTERED', eid, redis.call('HLEN', entrants)}
