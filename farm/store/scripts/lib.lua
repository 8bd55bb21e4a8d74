-- Shared helpers, prepended to every script by farm.store.scripts (one copy of each idea).
-- ARGV[1] is the JSON config: {k = key templates (farm.store.keys), wb/db = histogram
-- bounds in seconds for queue wait and job duration}. Times are Redis server ms.
local C = cjson.decode(ARGV[1])
local K = C.k

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function fmt(n)
  return string.format('%.0f', n)
end

-- Histogram observation: per-bucket (not cumulative) counts; /metrics accumulates them.
local function observe(pool, name, value_s, bounds)
  local stats = K.stats .. pool
  local idx = #bounds + 1
  for i, b in ipairs(bounds) do
    if value_s <= b then idx = i; break end
  end
  redis.call('HINCRBY', stats, name .. '_bucket:' .. idx, 1)
  redis.call('HINCRBYFLOAT', stats, name .. '_sum', value_s)
  redis.call('HINCRBY', stats, name .. '_count', 1)
end

local function note(id, attempt, text)
  redis.call('XADD', K.log .. id, '*', 'a', attempt, 'd', '[farm] ' .. text .. '\n')
end

-- Put a job (back) in its pool's queue and wake one idle executor.
local function make_ready(id, pool, qscore, now)
  redis.call('ZADD', K.queue .. pool, qscore, id)
  redis.call('ZADD', K.waiting .. pool, now, id)
  redis.call('LPUSH', K.wake .. pool, '1')
  redis.call('LTRIM', K.wake .. pool, 0, 255)
end

-- Take a running job off the lease and timeout books (retry or end).
local function unlease(id, pool)
  redis.call('ZREM', K.leases, id)
  redis.call('ZREM', K.deadlines, id)
  redis.call('SREM', K.running .. pool, id)
end

-- The one way a job reaches a terminal state (queued|running -> succeeded|failed|cancelled|timed_out).
local function terminate(id, state, err, now)
  local jk = K.job .. id
  local f = redis.call('HMGET', jk, 'pool', 'started_at', 'state', 'attempt')
  local pool, started, prev, attempt = f[1], f[2], f[3], f[4]
  unlease(id, pool)
  redis.call('ZREM', K.queue .. pool, id)
  redis.call('ZREM', K.waiting .. pool, id)
  redis.call('HSET', jk, 'state', state, 'error', err, 'finished_at', now)
  redis.call('ZADD', K.finished, now, id)
  redis.call('HINCRBY', K.stats .. pool, 'finished_total:' .. state, 1)
  if prev == 'running' and started and started ~= '' then
    observe(pool, 'duration', (now - tonumber(started)) / 1000, C.db)
  end
  redis.call('XADD', K.log .. id, '*', 'a', attempt, 'e', state)
end
