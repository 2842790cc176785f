-- close.lua: end a sale now (the host stops it early): ends_at becomes min(ends_at, Redis TIME).
-- KEYS[1] sale hash
-- ARGV (none)
-- Returns {code, ends_at_ms}; code CLOSED | NOT_FOUND
local sale = KEYS[1]
if not sale_exists(sale) then return {'NOT_FOUND', 0} end
local now = now_ms()
local ends = tonumber(redis.call('HGET', sale, 'ends_at'))
if now < ends then
  ends = now
  redis.call('HSET', sale, 'ends_at', now)
  local starts = tonumber(redis.call('HGET', sale, 'starts_at'))
  if starts > now then redis.call('HSET', sale, 'starts_at', now - 1) end
end
return {'CLOSED', ends}
