#!lua flags=allow-oom
-- edges: running->queued, running->failed, running->timed_out, queued->expired
-- Server-side recovery, run by any number of reapers. ARGV limit, node_timeout_ms.
-- An expired lease means the attempt's executor is lost, but its processes may live on. If
-- the attempt's node has a live warden (seen within node_timeout), the attempt is fenced:
-- it stays `running`, off the lease book, until that node confirms nothing of it runs
-- (fenced.lua requeues it then). A node whose warden is silent is presumed gone with its
-- processes: the job is requeued (running -> queued, attempt + 1) within the retry budget,
-- else fails with executor_lost. Running jobs past timeout + grace end as timed_out; queued
-- jobs past their queue timeout end as expired.
-- Returns {requeued, lost, timed_out, expired, fencing}.
local limit, node_timeout = tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local requeued, lost, fencing = 0, 0, 0
local function node_alive(node)
  if not node or node == '' then return false end
  local seen = redis.call('ZSCORE', K.nodes, node)
  return seen and tonumber(seen) >= now - node_timeout
end
local function count(outcome)
  if outcome == 'requeued' then requeued = requeued + 1 else lost = lost + 1 end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.leases, '-inf', now, 'LIMIT', 0, limit)) do
  local jk = K.job .. id
  local f = redis.call('HMGET', jk, 'state', 'attempt', 'pool', 'executor', 'node')
  redis.call('ZREM', K.leases, id)
  if f[1] == 'running' then
    redis.call('HINCRBY', K.stats .. f[3], 'lease_expired_total', 1)
    if node_alive(f[5]) then
      redis.call('HSET', jk, 'fence', f[2], 'fence_at', now)
      redis.call('ZADD', K.fencing, now, id)
      redis.call('ZADD', K.fences .. f[5], now, id)
      note(id, f[2], 'lease of attempt ' .. f[2] .. ' on ' .. f[4] .. ' expired; fencing it on node ' .. f[5])
      fencing = fencing + 1
    else
      count(requeue_or_lose(id, 'lease of attempt ' .. f[2] .. ' on ' .. f[4] .. ' expired', now))
    end
  end
end
-- Fences whose node went silent: nothing there confirms, and nothing there runs.
for _, id in ipairs(redis.call('ZRANGE', K.fencing, 0, limit - 1)) do
  local f = redis.call('HMGET', K.job .. id, 'state', 'attempt', 'node', 'fence')
  if f[1] ~= 'running' or f[4] ~= f[2] then
    redis.call('ZREM', K.fencing, id)
  elseif not node_alive(f[3]) then
    count(requeue_or_lose(id, 'node ' .. f[3] .. ' went silent while fencing attempt ' .. f[2], now))
  end
end
-- Jobs past a deadline in `book` end as `state` with `err`, if still in `while_state`.
local function expire(book, while_state, state, err, text)
  local n = 0
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', book, '-inf', now, 'LIMIT', 0, limit)) do
    local f = redis.call('HMGET', K.job .. id, 'state', 'attempt')
    if f[1] == while_state then
      note(id, f[2], text)
      terminate(id, state, err, now)
      n = n + 1
    else
      redis.call('ZREM', book, id)
    end
  end
  return n
end
local timed_out = expire(K.deadlines, 'running', 'timed_out', 'timeout', 'timed out (reaped by the server)')
local expired = expire(K.qdeadlines, 'queued', 'expired', 'queue_timeout', 'expired: still queued after its queue timeout')
return {requeued, lost, timed_out, expired, fencing}
