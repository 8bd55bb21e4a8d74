#!lua flags=allow-oom
-- edges: none
-- Renew a running attempt's lease. ARGV id, attempt, lease_ms.
-- Returns 'ok', 'stale' (another attempt is current), 'gone', or the job's state when it
-- is no longer running (e.g. 'cancelled'), or 'fenced' (its lease expired and its node is
-- killing it): the executor then kills the step.
-- On 'ok' the attempt's executor is seen too: its registry entry is renewed in this step (no
-- extra round trip), so an executor stays counted for as long as it holds a job, however
-- long that runs. It says busy with this job, or draining if a drain was asked meanwhile.
local id, attempt = ARGV[2], ARGV[3]
local f = redis.call('HMGET', K.job .. id, 'state', 'attempt', 'fence', 'executor', 'pool')
if not f[1] then return 'gone' end
if f[2] ~= attempt then return 'stale' end
if f[1] ~= 'running' then return f[1] end
if f[3] then return 'fenced' end
local now = now_ms()
redis.call('ZADD', K.leases, 'XX', now + tonumber(ARGV[4]), id)
if f[4] and f[4] ~= '' then
  if redis.call('HGET', K.executor .. f[4], 'state') == 'draining' then
    executor_state(f[4], f[5], 'draining', id, now)
  else
    executor_state(f[4], f[5], 'busy', id, now)
  end
end
return 'ok'
