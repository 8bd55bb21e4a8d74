#!lua flags=allow-oom
-- edges: queued->running
-- An executor takes the next job of a pool under a lease (queued -> running): the tenant
-- with the lowest stride pass, its best job; a job whose concurrency group is full is
-- parked on the group (it never blocks the jobs behind it) and the search goes on.
-- ARGV pool, executor, lease_ms, grace_ms, node (where the executor runs: its warden fences it).
-- Returns {id, attempt, spec, tenant, secrets, cache tier, source_exempt}, false (nothing claimable), or 'more' (search
-- budget spent: call again). The executor's registry entry becomes busy.
local pool, executor = ARGV[2], ARGV[3]
local lease_ms, grace_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local tk, pk = K.tenants .. pool, K.pass .. pool
for _ = 1, 100 do
  local top = redis.call('ZRANGE', tk, 0, 0, 'WITHSCORES')
  if #top == 0 then return false end
  local tenant, pass = top[1], tonumber(top[2])
  local q = K.queue .. pool .. ':' .. tenant
  local popped = redis.call('ZPOPMIN', q)
  if redis.call('ZCARD', q) == 0 then
    redis.call('ZREM', tk, tenant)
  end
  if #popped > 0 then
    local id = popped[1]
    local jk = K.job .. id
    local f = redis.call('HMGET', jk, 'state', 'attempt', 'timeout_ms', 'ready_at', 'group', 'weight', 'spec', 'secrets', 'tier', 'run', 'source_exempt')
    local group = f[5]
    local gk = (group and group ~= '') and group_key('group', tenant, group) or nil
    if f[1] ~= 'queued' then
      -- stale entry (already ended by a racing cancel): drop it and go on
    elseif gk and tonumber(redis.call('HGET', gk, 'running') or '0') >= tonumber(redis.call('HGET', gk, 'limit') or '1') then
      redis.call('ZADD', group_key('parked', tenant, group), popped[2], id)
      redis.call('HSET', jk, 'parked', 1)  -- why it waited, for /wait once it started
    else
      local now = now_ms()
      if gk then
        redis.call('HINCRBY', gk, 'running', 1)
        redis.call('HSET', jk, 'slot', 1)
        redis.call('SREM', group_key('gq', tenant, group), id)
      end
      local nextpass = pass + 1 / tonumber(f[6] or '1')
      redis.call('HSET', pk, tenant, nextpass, '', pass)
      redis.call('ZADD', tk, 'XX', nextpass, tenant)
      redis.call('ZREM', K.waiting .. pool, id)
      redis.call('ZREM', K.qdeadlines, id)
      -- taken_by: an executor that was starting came up for it (/wait says so once it started).
      local was = redis.call('HGET', K.executor .. executor, 'state') or ''
      redis.call('HSET', jk, 'state', 'running', 'executor', executor, 'node', ARGV[6] or '', 'started_at', now, 'taken_by', was)
      queued_by(tenant, -1)
      run_running(f[10], 1, now)
      redis.call('ZADD', K.leases, now + lease_ms, id)
      redis.call('ZADD', K.deadlines, now + tonumber(f[3]) + grace_ms, id)
      redis.call('SADD', K.running .. pool, id)
      observe(pool, 'wait', (now - tonumber(f[4])) / 1000, C.wb)
      demand(pool, 'w', now - tonumber(f[4]))
      note(id, f[2], 'attempt ' .. f[2] .. ' started on ' .. executor)
      executor_state(executor, pool, 'busy', id, now)
      return {id, f[2], f[7], tenant, f[8] or '', f[9] or 'unprotected', f[11] or ''}
    end
  end
end
return 'more'
