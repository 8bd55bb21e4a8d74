#!lua flags=allow-oom
-- edges: running->queued, running->failed
-- A node's warden confirms that nothing of a fenced attempt runs there any more: the job
-- goes back to the queue as the next attempt (or fails, its retry budget spent).
-- ARGV id, attempt, node. Returns 'requeued', 'lost', or 'stale' (the job moved on: it
-- ended, or this is not the attempt being fenced); the node's fence entry is dropped.
local id, attempt, node = ARGV[2], ARGV[3], ARGV[4]
redis.call('ZREM', K.fences .. node, id)
local f = redis.call('HMGET', K.job .. id, 'state', 'attempt', 'fence', 'node')
if f[1] ~= 'running' or f[2] ~= attempt or f[3] ~= attempt or f[4] ~= node then
  return 'stale'
end
return requeue_or_lose(id, 'attempt ' .. attempt .. ' fenced on node ' .. node .. ' (its processes are gone)', now_ms())
