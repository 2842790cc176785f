-- coupon_drop.lua: create a coupon drop once (a drop id is unique across rooms).
-- KEYS[1] the drop's meta hash   ls:drop:{drop:<drop>}:meta
-- ARGV[1] room id  ARGV[2] keys' TTL after expires_at (ms)  ARGV[3] starts in (ms from now)
-- ARGV[4] claim window (ms)  ARGV[5] valid for (ms from the start)  then field, value pairs of the terms
-- (kind, value, currency, min_spend, sales, products, team, count, prize)
-- Returns {code, room}: CREATED (the drop's times are fixed with Redis TIME now) | EXISTS (room: its room;
-- nothing changed)
local meta = KEYS[1]
local room, keep, starts_in, claim_ms, valid_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5])
if redis.call('EXISTS', meta) == 1 then return {'EXISTS', redis.call('HGET', meta, 'room') or ''} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local starts = now + starts_in
local fields = {'room', room, 'created_at', now, 'starts_at', starts, 'claim_until', starts + claim_ms,
                'expires_at', starts + valid_ms, 'claimed', 0, 'redeemed', 0, 'state', 'open'}
for i = 6, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('HSET', meta, unpack(fields))
redis.call('PEXPIREAT', meta, starts + valid_ms + keep)
return {'CREATED', room}
