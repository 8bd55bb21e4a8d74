-- edges: running->queued, running->failed, running->timed_out, queued->expired
-- Server-side recovery, run by any number of reapers: expired leases go back to the queue
-- with attempt + 1 (running -> queued) until the retry budget is spent, then fail with
-- executor_lost; running jobs past timeout + grace end as timed_out; queued jobs past their
-- queue timeout end as expired. ARGV limit. Returns {requeued, lost, timed_out, expired}.
local limit = tonumber(ARGV[2])
local now = now_ms()
local requeued, lost = 0, 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.leases, '-inf', now, 'LIMIT', 0, limit)) do
  local jk = K.job .. id
  local f = redis.call('HMGET', jk, 'state', 'attempt', 'retries', 'pool', 'qscore', 'executor', 'tenant', 'group')
  if f[1] ~= 'running' then
    redis.call('ZREM', K.leases, id)
  else
    local attempt, pool = tonumber(f[2]), f[4]
    redis.call('HINCRBY', K.stats .. pool, 'lease_expired_total', 1)
    if attempt <= tonumber(f[3]) then
      unlease(id)
      redis.call('HSET', jk, 'state', 'queued', 'attempt', attempt + 1, 'executor', '',
        'error', 'executor_lost', 'ready_at', now, 'log_truncated', 0, 'log_bytes', 0)
      note(id, attempt, 'lease of attempt ' .. attempt .. ' on ' .. f[6] .. ' expired; requeued as attempt ' .. (attempt + 1))
      redis.call('HINCRBY', K.stats .. pool, 'retries_total:executor_lost', 1)
      make_ready(id, pool, f[7], f[5], f[8], now)
      requeued = requeued + 1
    else
      note(id, attempt, 'lease of attempt ' .. attempt .. ' expired; retry budget spent')
      terminate(id, 'failed', 'executor_lost', now)
      lost = lost + 1
    end
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
return {requeued, lost, timed_out, expired}
