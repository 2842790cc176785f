-- Shared helpers, prepended to every script by inventory/scripts.py (no keys, no writes).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- ids: 1..128 chars of [A-Za-z0-9_.:@-]
local function is_id(s)
  return type(s) == 'string' and #s >= 1 and #s <= 128 and s:find('[^%w_%.:@%-]') == nil
end

-- strict positive decimal integer (tonumber would accept "0x10", "1e3", " 1", "1.5")
local function parse_pos_int(s, max)
  if type(s) ~= 'string' or #s > 15 or not s:match('^[1-9]%d*$') then return nil end
  local n = tonumber(s)
  if n > max then return nil end
  return n
end

local function parse_nonneg_int(s, max)
  if s == '0' then return 0 end
  return parse_pos_int(s, max)
end

-- the sale hash must exist and be a hash; returns nil otherwise (nothing written)
local function sale_exists(key)
  return redis.call('TYPE', key).ok == 'hash'
end

-- a sale's terms from its script's argument list, args[1..10] (arm.lua, rebuild.lua): sale_id, room_id,
-- sku, unit_price, currency, allocated, per_user_limit, starts_at_ms, ends_at_ms, hold_ttl_ms; a malformed
-- number is nil
local function sale_terms(args)
  return args[1], args[2], args[3], parse_nonneg_int(args[4], 1e12), args[5], parse_nonneg_int(args[6], 1e9),
    parse_pos_int(args[7], 1e9), parse_nonneg_int(args[8], 1e14), parse_pos_int(args[9], 1e14),
    parse_pos_int(args[10], 1e10)
end
