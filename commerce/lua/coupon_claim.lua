-- coupon_claim.lua: one viewer claims one coupon of a drop: never more than `count`, never two to one viewer.
-- KEYS[1] the drop's meta hash  KEYS[2] its claims hash (user -> json coupon state)
--   ls:drop:{drop:<drop>}:meta / :claims
-- ARGV[1] user id  ARGV[2] request id  ARGV[3] the user's fan team in the drop's room ('' = none)
-- ARGV[4] '1' = a grant (a draw's prize: the window, the team and the hidden flag do not apply) | '0' = a claim
-- Coupon state json: {s: c (claimed) | a (applying: locked to hold h until x) | r (redeemed: order o), t: claimed
-- at ms, r: request id, h?, x?, o?}
-- Returns {code, claimed_at, left, last}; code CLAIMED (also a retry with the same request id: nothing changed)
-- | ALREADY_CLAIMED (claimed_at: the one held) | ALL_CLAIMED | NOT_STARTED | ENDED | TEAM_ONLY | NOT_FOUND;
-- last = 1 when this claim took the drop's last coupon (the caller announces it once)
local meta, claims = KEYS[1], KEYS[2]
local user, rid, team, grant = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1'
local d = redis.call('HMGET', meta, 'count', 'claimed', 'starts_at', 'claim_until', 'state', 'team', 'prize',
                     'expires_at')
if not d[1] then return {'NOT_FOUND', 0, 0, 0} end
local count, claimed = tonumber(d[1]), tonumber(d[2])
local left = count - claimed
local cur = redis.call('HGET', claims, user)
if cur then
  local c = cjson.decode(cur)
  if c.r == rid then return {'CLAIMED', c.t, left, 0} end
  return {'ALREADY_CLAIMED', c.t, left, 0}
end
if d[7] == '1' and not grant then return {'NOT_FOUND', 0, 0, 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if not grant then
  if now < tonumber(d[3]) then return {'NOT_STARTED', 0, left, 0} end
  if d[5] == 'ended' or now >= tonumber(d[4]) then return {'ENDED', 0, left, 0} end
  if d[6] and d[6] ~= '' and d[6] ~= team then return {'TEAM_ONLY', 0, left, 0} end
end
if left <= 0 then return {'ALL_CLAIMED', 0, 0, 0} end
redis.call('HSET', claims, user, cjson.encode({s = 'c', t = now, r = rid}))
redis.call('HINCRBY', meta, 'claimed', 1)
redis.call('PEXPIREAT', claims, redis.call('PEXPIRETIME', meta))
local last = 0
if left == 1 then
  redis.call('HSET', meta, 'state', 'claimed_out')
  last = 1
end
return {'CLAIMED', now, left - 1, last}
