-- edges: queued->running
-- An executor takes the next job of a pool under a lease (queued -> running).
-- ARGV pool, executor, lease_ms, grace_ms. Returns {id, attempt} or false.
local pool, executor = ARGV[2], ARGV[3]
local lease_ms, grace_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
for _ = 1, 64 do
  local popped = redis.call('ZPOPMIN', K.queue .. pool)
  if #popped == 0 then return false end
  local id = popped[1]
  local jk = K.job .. id
  local f = redis.call('HMGET', jk, 'state', 'attempt', 'timeout_ms', 'ready_at')
  if f[1] == 'queued' then
    local now = now_ms()
    redis.call('ZREM', K.waiting .. pool, id)
    redis.call('HSET', jk, 'state', 'running', 'executor', executor, 'started_at', now)
    redis.call('ZADD', K.leases, now + lease_ms, id)
    redis.call('ZADD', K.deadlines, now + tonumber(f[3]) + grace_ms, id)
    redis.call('SADD', K.running .. pool, id)
    observe(pool, 'wait', (now - tonumber(f[4])) / 1000, C.wb)
    note(id, f[2], 'attempt ' .. f[2] .. ' started on ' .. executor)
    return {id, f[2]}
  end
  -- not queued (already ended by a racing cancel): drop the stale entry and go on
  redis.call('ZREM', K.waiting .. pool, id)
end
return false
