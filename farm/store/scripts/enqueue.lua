-- edges: (new)->queued, queued->cancelled
-- Submit a job. ARGV id, tenant, pool, priority, retries, timeout_ms, spec_json, weight,
-- group ('' for none), group_limit, on_full, queue_timeout_ms ('' for none),
-- idempotency key ('' for none), body sha256, callback url ('' for none), secrets json
-- (resolved values), rerun_of ('' for none), cache tier (from the submitter's token).
-- Returns {'created', id, queued_at_ms} | {'duplicate', id} (same key, same body) | {'conflict', id}.
local id, tenant, pool = ARGV[2], ARGV[3], ARGV[4]
local priority = tonumber(ARGV[5])
local group, limit, on_full = ARGV[10], ARGV[11], ARGV[12]
local idem, body = ARGV[14], ARGV[15]
if idem ~= '' then
  local ik = K.idem .. tenant .. ':' .. idem
  local seen = redis.call('GET', ik)
  if seen then
    local sep = string.find(seen, ' ', 1, true)
    local old = string.sub(seen, 1, sep - 1)
    if string.sub(seen, sep + 1) == body then return {'duplicate', old} end
    return {'conflict', old}
  end
  redis.call('SET', ik, id .. ' ' .. body, 'EX', 86400)
end
local now = now_ms()
local seq = redis.call('INCR', K.seq)
-- Dispatch order within a tenant: higher priority first, then submission order.
-- (100-p)*1e13 + seq stays an exact integer in a double for 10^13 submissions.
local qscore = fmt((100 - priority) * 1e13 + seq)
redis.call('HSET', K.job .. id,
  'id', id, 'tenant', tenant, 'pool', pool, 'state', 'queued', 'attempt', 1,
  'priority', priority, 'retries', ARGV[6], 'timeout_ms', ARGV[7], 'spec', ARGV[8],
  'weight', ARGV[9], 'group', group, 'qscore', qscore, 'seq', seq, 'queued_at', now,
  'ready_at', now, 'log_bytes', 0, 'callback', ARGV[16], 'secrets', ARGV[17], 'rerun_of', ARGV[18], 'tier', ARGV[19])
redis.call('ZADD', K.jobs, seq, id)
redis.call('ZADD', K.tenant_jobs .. tenant, seq, id)
redis.call('HINCRBY', K.stats .. pool, 'submitted_total', 1)
demand(pool, 'a', now)
if group ~= '' then
  -- A group's limit is the one its latest job set.
  redis.call('HSET', group_key('group', tenant, group), 'limit', limit)
  if on_full == 'supersede' then
    for _, old in ipairs(redis.call('SMEMBERS', group_key('gq', tenant, group))) do
      note(old, redis.call('HGET', K.job .. old, 'attempt'), 'superseded by ' .. id)
      terminate(old, 'cancelled', 'superseded', now)
    end
  end
end
if ARGV[13] ~= '' then redis.call('ZADD', K.qdeadlines, now + tonumber(ARGV[13]), id) end
make_ready(id, pool, tenant, qscore, group, now)
return {'created', id, now}
