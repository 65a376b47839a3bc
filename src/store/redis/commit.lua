#!lua
-- One mutating call of the Redis store, all or nothing (see tx.rs).
--
-- The shebang (no flags) makes Redis refuse the whole script up front when it is out of
-- memory, instead of failing half-way through the writes.
--
-- KEYS[1] the tenant's event sequence, KEYS[2] its log, KEYS[3] its channel (declared so
-- that a cluster client routes by the tenant's hash tag); further keys are named by index.
-- ARGV: retention, publish command, then three counted lists:
--   guards  (kind, key index, a, expected): every value the caller read must still hold;
--   writes  (op, key index, a, b);
--   events  (wire text after '{"id":<id>'): appended to the log and published in order.
-- Returns {'ok', first event id, last event id} or {'retry', guard number}.

local at = 1
local function nextarg()
  local v = ARGV[at]
  at = at + 1
  return v
end

local retention = tonumber(nextarg())
local publish = nextarg()

-- The members a set/zset guard expects, newline-separated (ids never hold a newline).
local function members(list)
  local out = {}
  for m in string.gmatch(list, '[^\n]+') do
    out[#out + 1] = m
  end
  return out
end

local function holds(kind, key, a, expected)
  if kind == 'h' or kind == 'g' then
    local v
    if kind == 'h' then v = redis.call('HGET', key, a) else v = redis.call('GET', key) end
    local got = '-'
    if v then got = '=' .. v end
    return got == expected
  elseif kind == 'zm' then
    local got = '-'
    if redis.call('ZSCORE', key, a) then got = '=' end
    return got == expected
  elseif kind == 's' or kind == 'z' then
    local want = members(expected)
    local card, probe
    if kind == 's' then
      card = redis.call('SCARD', key)
      probe = function(m) return redis.call('SISMEMBER', key, m) == 1 end
    else
      card = redis.call('ZCARD', key)
      probe = function(m) return redis.call('ZSCORE', key, m) ~= false end
    end
    if card ~= #want then return false end
    for _, m in ipairs(want) do
      if not probe(m) then return false end
    end
    return true
  end
  return false
end

local known_guards = {h = true, g = true, zm = true, s = true, z = true}
local known_writes = {hset = true, hdel = true, set = true, sadd = true, srem = true, zadd = true, zrem = true, zincr = true}

-- Read every instruction before touching anything: a malformed one fails the call whole.
local guards = {}
for i = 1, tonumber(nextarg()) do
  local g = {nextarg(), KEYS[tonumber(nextarg())], nextarg(), nextarg()}
  if not known_guards[g[1]] or not g[2] then return redis.error_reply('bad guard ' .. i) end
  guards[i] = g
end
local writes = {}
for i = 1, tonumber(nextarg()) do
  local w = {nextarg(), KEYS[tonumber(nextarg())], nextarg(), nextarg()}
  if not known_writes[w[1]] or not w[2] then return redis.error_reply('bad write ' .. i) end
  writes[i] = w
end

for i, g in ipairs(guards) do
  if not holds(g[1], g[2], g[3], g[4]) then return {'retry', i} end
end

for _, w in ipairs(writes) do
  local op, key, a, b = w[1], w[2], w[3], w[4]
  if op == 'hset' then redis.call('HSET', key, a, b)
  elseif op == 'hdel' then redis.call('HDEL', key, a)
  elseif op == 'set' then redis.call('SET', key, a)
  elseif op == 'sadd' then redis.call('SADD', key, a)
  elseif op == 'srem' then redis.call('SREM', key, a)
  elseif op == 'zadd' then redis.call('ZADD', key, 0, a)
  elseif op == 'zrem' then redis.call('ZREM', key, a)
  else
    -- zincr: a counter per member that disappears at zero.
    redis.call('ZINCRBY', key, b, a)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', 0)
  end
end

local events = tonumber(nextarg())
local first, last = 0, 0
for i = 1, events do
  local id = redis.call('INCR', KEYS[1])
  local wire = '{"id":' .. string.format('%d', id) .. nextarg()
  redis.call('ZADD', KEYS[2], id, wire)
  redis.call(publish, KEYS[3], wire)
  if i == 1 then first = id end
  last = id
end
if events > 0 and last > retention then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', last - retention))
end
return {'ok', first, last}
