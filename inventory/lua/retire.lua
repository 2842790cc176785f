-- retire.lua: give every key of an ended, settled sale its retention TTL, atomically (or only check).
-- A sale is settled when it has ended (Redis TIME >= ends_at), has no live hold (deadlines empty) and
-- its outbox has nothing undelivered or unacked for the settlement group. Then nothing can change
-- its keys any more (reserve answers ENDED, confirm/release/reap need a held hold), so the counters
-- returned are final. A late confirm runs before or after this script, never inside it: before, its
-- hold was in the deadlines zset and its entry is pending (no TTL is set); after, there is no held hold.
-- KEYS[1] sale hash  KEYS[2] buyers hash  KEYS[3] holds hash  KEYS[4] idem hash  KEYS[5] deadlines zset
-- KEYS[6] outbox stream
-- ARGV[1] settlement consumer group ("settle")  ARGV[2] retention ms  ARGV[3] mode "check" | "expire"
-- Returns {code, allocated, available, held, sold, ends_at_ms, ttl_ms (of the sale hash, -1 none)}
-- code OPEN (not ended) | HOLDS (live holds, or a pool-backed sale's units not yet given back) | PENDING (outbox not settled) | SETTLED (check mode: may
--   retire) | RETIRED (expire mode: every key has a TTL now, or had one already: not extended)
--   | GONE (no sale hash: what is left gets the TTL once its outbox is settled) | INVALID
local sale, buyers, holds, idem, deadlines, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local group, mode = ARGV[1], ARGV[3]
local ttl = parse_pos_int(ARGV[2], 1e12)
if not ttl or (mode ~= 'check' and mode ~= 'expire') or not is_id(group) then
  return {'INVALID', 0, 0, 0, 0, 0, -1}
end

-- the outbox is settled when every entry was delivered to the group and acked
local function outbox_settled()
  local kind = redis.call('TYPE', outbox).ok
  if kind == 'none' then return true end
  if kind ~= 'stream' then return false end
  local info = redis.call('XINFO', 'STREAM', outbox)
  local last, length = '0-0', 0
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] elseif info[i] == 'length' then length = info[i + 1] end
  end
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', outbox)) do
    local name, pending, delivered = nil, 0, '0-0'
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1]
      elseif g[i] == 'pending' then pending = g[i + 1]
      elseif g[i] == 'last-delivered-id' then delivered = g[i + 1] end
    end
    if name == group then
      if pending ~= 0 then return false end
      local lm, ls = last:match('^(%d+)-(%d+)$')
      local dm, ds = delivered:match('^(%d+)-(%d+)$')
      lm, ls, dm, ds = tonumber(lm), tonumber(ls), tonumber(dm), tonumber(ds)
      return dm > lm or (dm == lm and ds >= ls)
    end
  end
  return length == 0  -- no settlement group yet: settled only if nothing was ever left in it
end

local function expire_all()
  -- a missing outbox is created (empty, with the group) so it carries the TTL too: a worker that
  -- creates its group later (XGROUP CREATE MKSTREAM) then finds it and leaves no key without a TTL
  if redis.call('EXISTS', outbox) == 0 then
    redis.call('XGROUP', 'CREATE', outbox, group, '0', 'MKSTREAM')
  end
  redis.call('PEXPIRE', sale, ttl)
  redis.call('PEXPIRE', buyers, ttl)
  redis.call('PEXPIRE', holds, ttl)
  redis.call('PEXPIRE', idem, ttl)
  redis.call('PEXPIRE', deadlines, ttl)
  redis.call('PEXPIRE', outbox, ttl)
end

if not sale_exists(sale) then
  if redis.call('TYPE', sale).ok ~= 'none' then return {'INVALID', 0, 0, 0, 0, 0, -1} end
  if not outbox_settled() then return {'PENDING', 0, 0, 0, 0, 0, -1} end
  if mode == 'expire' then  -- what is left (buyers, holds, idem, deadlines, outbox), unless it has a TTL
    redis.call('PEXPIRE', buyers, ttl, 'NX')
    redis.call('PEXPIRE', holds, ttl, 'NX')
    redis.call('PEXPIRE', idem, ttl, 'NX')
    redis.call('PEXPIRE', deadlines, ttl, 'NX')
    redis.call('PEXPIRE', outbox, ttl, 'NX')
  end
  return {'GONE', 0, 0, 0, 0, 0, -1}
end
local c = redis.call('HMGET', sale, 'allocated', 'available', 'held', 'sold', 'ends_at')
local out = {'', tonumber(c[1]), tonumber(c[2]), tonumber(c[3]), tonumber(c[4]), tonumber(c[5]),
             redis.call('PTTL', sale)}
if now_ms() < out[6] then out[1] = 'OPEN'; return out end
if redis.call('ZCARD', deadlines) > 0 then out[1] = 'HOLDS'; return out end
-- a pool-backed sale first gives its unsold units back (pool_return.lua); until then it keeps them
if out[3] > 0 and redis.call('HEXISTS', sale, 'pool') == 1 then out[1] = 'HOLDS'; return out end
if not outbox_settled() then out[1] = 'PENDING'; return out end
if mode == 'check' then out[1] = 'SETTLED'; return out end
if out[7] < 0 then  -- not retired yet (a second call never extends the window)
  expire_all()
  out[7] = ttl
end
out[1] = 'RETIRED'
return out
