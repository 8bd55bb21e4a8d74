#!lua flags=allow-oom
-- edges: none
-- Retention: delete jobs that ended more than retention_ms ago, with their logs (and their
-- ids from the prefix index: a purged id's prefix names nothing).
-- ARGV retention_ms, limit. Returns the purged ids.
local cutoff = now_ms() - tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', K.finished, '-inf', cutoff, 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local tenant = redis.call('HGET', K.job .. id, 'tenant')
  redis.call('DEL', K.job .. id, K.log .. id, K.logcut .. id)
  redis.call('ZREM', K.jobs, id)
  redis.call('ZREM', K.jobids, id)
  if tenant then redis.call('ZREM', K.tenant_jobs .. tenant, id) end
  redis.call('ZREM', K.finished, id)
end
-- Runs go the same way, by the time their last job ended.
for _, run in ipairs(redis.call('ZRANGEBYSCORE', K.runs_finished, '-inf', cutoff, 'LIMIT', 0, tonumber(ARGV[3]))) do
  local tenant = redis.call('HGET', K.run .. run, 'tenant')
  redis.call('DEL', K.run .. run)
  redis.call('ZREM', K.runs, run)
  redis.call('ZREM', K.runids, run)
  if tenant then redis.call('ZREM', K.tenant_runs .. tenant, run) end
  redis.call('ZREM', K.runs_finished, run)
end
return ids
