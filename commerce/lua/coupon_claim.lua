-- coupon_claim.lua: viewers claim coupons of one drop, one or many requests per call (the burst path):
-- never more than `count` claimed, never two to one viewer, each request decided in order as if alone.
-- KEYS[1] the drop's meta hash  KEYS[2] its claims hash (user -> json coupon state)
--   ls:drop:{drop:<drop>}:meta / :claims
-- ARGV[1] '1' = grants (a draw's prize: the window, the team and the hidden flag do not apply) | '0' = claims
-- then per request 3 args: user id, request id, the user's fan team in the drop's room ('' = none)
-- Coupon state json: {s: c (claimed) | a (applying: locked to hold h until x) | r (redeemed: order o), t: claimed
-- at ms, r: request id, h?, x?, o?}
-- Returns one {code, claimed_at, left, last, fresh} per request, in order; code CLAIMED (fresh = 1; a retry with
-- the same request id: fresh = 0, nothing changed) | ALREADY_CLAIMED (claimed_at: the one held) | ALL_CLAIMED
-- | NOT_STARTED | ENDED | TEAM_ONLY | NOT_FOUND; last = 1 for the request that took the drop's last coupon
-- (announced once)
local meta, claims = KEYS[1], KEYS[2]
local grant = ARGV[1] == '1'
local n = math.floor((#ARGV - 1) / 3)
local out = {}
local d = redis.call('HMGET', meta, 'count', 'claimed', 'starts_at', 'claim_until', 'state', 'team', 'prize')
if not d[1] or (d[7] == '1' and not grant) then
  for i = 1, n do out[i] = {'NOT_FOUND', 0, 0, 0, 0} end
  return out
end
local count, claimed = tonumber(d[1]), tonumber(d[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = 'OPEN'
if not grant then
  if now < tonumber(d[3]) then window = 'NOT_STARTED'
  elseif d[5] == 'ended' or now >= tonumber(d[4]) then window = 'ENDED' end
end
local team_only = (not grant) and d[6] and d[6] ~= ''
local taken = 0
for i = 1, n do
  local user, rid, team = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
  local left = count - claimed
  local cur = redis.call('HGET', claims, user)
  if cur then
    local c = cjson.decode(cur)
    out[i] = {c.r == rid and 'CLAIMED' or 'ALREADY_CLAIMED', c.t, left, 0, 0}
  elseif window ~= 'OPEN' then
    out[i] = {window, 0, left, 0, 0}
  elseif team_only and d[6] ~= team then
    out[i] = {'TEAM_ONLY', 0, left, 0, 0}
  elseif left <= 0 then
    out[i] = {'ALL_CLAIMED', 0, 0, 0, 0}
  else
    redis.call('HSET', claims, user, cjson.encode({s = 'c', t = now, r = rid}))
    claimed = claimed + 1
    taken = taken + 1
    out[i] = {'CLAIMED', now, left - 1, left == 1 and 1 or 0, 1}
  end
end
if taken > 0 then
  redis.call('HSET', meta, 'claimed', claimed)
  if claimed >= count then redis.call('HSET', meta, 'state', 'claimed_out') end
  redis.call('PEXPIREAT', claims, redis.call('PEXPIRETIME', meta))
end
return out
