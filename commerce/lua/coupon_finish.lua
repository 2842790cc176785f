-- coupon_finish.lua: the last step of redeeming: a coupon locked to a hold becomes redeemed (the hold was
-- confirmed with it) or claimed again (it was not: released, expired, refused, the payment failed).
-- KEYS[1] the drop's meta hash  KEYS[2] its claims hash  KEYS[3] its applying zset
-- ARGV[1] user id  ARGV[2] hold id  ARGV[3] 'redeemed' | 'claimed' | 'extend'  ARGV[4] order id (redeemed) or the
-- new lapse ms (extend: the hold is still held and may be paid)
-- Returns {code, redeemed count}: REDEEMED | CLAIMED | EXTENDED | NOOP (the coupon is not locked to this hold:
-- nothing changed; a repeated finish)
local meta, claims, applying = KEYS[1], KEYS[2], KEYS[3]
local user, hold, outcome, arg = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local cur = redis.call('HGET', claims, user)
if not cur then return {'NOOP', 0} end
local c = cjson.decode(cur)
if c.s ~= 'a' or c.h ~= hold then return {'NOOP', 0} end
if outcome == 'extend' then
  c.x = tonumber(arg)
  redis.call('HSET', claims, user, cjson.encode(c))
  redis.call('ZADD', applying, c.x, user)
  return {'EXTENDED', 0}
end
redis.call('ZREM', applying, user)
if outcome == 'redeemed' then
  c.s, c.o, c.x = 'r', arg, nil
  redis.call('HSET', claims, user, cjson.encode(c))
  return {'REDEEMED', redis.call('HINCRBY', meta, 'redeemed', 1)}
end
c.s, c.h, c.x = 'c', nil, nil
redis.call('HSET', claims, user, cjson.encode(c))
return {'CLAIMED', 0}
