#!lua flags=allow-oom
-- edges: none
-- Renew a running attempt's lease. ARGV id, attempt, lease_ms.
-- Returns 'ok', 'stale' (another attempt is current), 'gone', or the job's state when it
-- is no longer running (e.g. 'cancelled'), or 'fenced' (its lease expired and its node is
-- killing it): the executor then kills the step.
local id, attempt = ARGV[2], ARGV[3]
local f = redis.call('HMGET', K.job .. id, 'state', 'attempt', 'fence')
if not f[1] then return 'gone' end
if f[2] ~= attempt then return 'stale' end
if f[1] ~= 'running' then return f[1] end
if f[3] then return 'fenced' end
redis.call('ZADD', K.leases, 'XX', now_ms() + tonumber(ARGV[4]), id)
return 'ok'
