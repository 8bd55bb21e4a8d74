-- edges: (new)->queued
-- Submit a job: ARGV id, tenant, pool, priority, retries, timeout_ms, spec_json.
-- Returns {queued_at_ms, seq}.
local id, tenant, pool = ARGV[2], ARGV[3], ARGV[4]
local priority = tonumber(ARGV[5])
local now = now_ms()
local seq = redis.call('INCR', K.seq)
-- Dispatch order: higher priority first, then submission order. (100-p)*1e13 + seq stays
-- an exact integer in a double for 10^13 submissions.
local qscore = fmt((100 - priority) * 1e13 + seq)
redis.call('HSET', K.job .. id,
  'id', id, 'tenant', tenant, 'pool', pool, 'state', 'queued', 'attempt', 1,
  'priority', priority, 'retries', ARGV[6], 'timeout_ms', ARGV[7], 'spec', ARGV[8],
  'qscore', qscore, 'seq', seq, 'queued_at', now, 'ready_at', now, 'log_bytes', 0)
redis.call('ZADD', K.jobs, seq, id)
redis.call('ZADD', K.tenant_jobs .. tenant, seq, id)
redis.call('HINCRBY', K.stats .. pool, 'submitted_total', 1)
make_ready(id, pool, qscore, now)
return {now, seq}
