#!lua flags=allow-oom
-- edges: queued->cancelled, running->cancelled
-- Cancel a job (queued|running -> cancelled). ARGV id.
-- Returns the state it was in ('queued'/'running' means it is cancelled now), or 'gone'.
local id = ARGV[2]
local f = redis.call('HMGET', K.job .. id, 'state', 'attempt')
if not f[1] then return 'gone' end
if f[1] == 'queued' or f[1] == 'running' then
  note(id, f[2], 'cancelled')
  terminate(id, 'cancelled', 'cancelled', now_ms())
end
return f[1]
