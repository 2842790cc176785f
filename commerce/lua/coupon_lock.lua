-- coupon_lock.lua: lock a viewer's claimed coupon to one hold before that hold is confirmed with the discount
-- (the first step of redeeming; commerce/coupons.py). Two payments racing with one coupon: one locks it.
-- KEYS[1] the drop's meta hash  KEYS[2] its claims hash  KEYS[3] its applying zset (user -> lock lapses at, ms)
-- ARGV[1] user id  ARGV[2] hold id  ARGV[3] the lock lapses at (ms: the hold's pay-by)
-- Returns {code}: LOCKED (also when already locked to this hold) | REDEEMED (already redeemed with this hold:
-- a retry) | COUPON_USED (redeemed with another hold, or locked to another one) | COUPON_EXPIRED | NOT_FOUND
local meta, claims, applying = KEYS[1], KEYS[2], KEYS[3]
local user, hold, lapse = ARGV[1], ARGV[2], tonumber(ARGV[3])
local cur = redis.call('HGET', claims, user)
if not cur then return {'NOT_FOUND'} end
local c = cjson.decode(cur)
if c.s == 'r' then return {c.h == hold and 'REDEEMED' or 'COUPON_USED'} end
if c.s == 'a' then return {c.h == hold and 'LOCKED' or 'COUPON_USED'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now >= tonumber(redis.call('HGET', meta, 'expires_at') or '0') then return {'COUPON_EXPIRED'} end
c.s, c.h, c.x = 'a', hold, lapse
redis.call('HSET', claims, user, cjson.encode(c))
redis.call('ZADD', applying, lapse, user)
redis.call('PEXPIREAT', applying, redis.call('PEXPIRETIME', meta))
return {'LOCKED'}
