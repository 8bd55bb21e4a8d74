-- edges: (new)->queued, queued->cancelled, running->cancelled
-- Submit a run: all its jobs queued in this one step, or none. ARGV[2]: JSON {id, tenant,
-- name, labels (JSON), group (supersede, '' for none), callback, idem, body (sha256 of the
-- run, with a key), graph (JSON [[name, needs], ...] by job), jobs: [the fields of each job,
-- as enqueue takes them, with name, blocked and after for its place in the graph]}. A job
-- that needs others waits off the queue until they succeed (lib.lua `release`). A run in a
-- supersede group first cancels the tenant's older runs in that group that have not ended.
-- max_queued ('' for none): the most jobs the tenant may have queued, these included.
-- Returns {'created', id, created_ms} | {'duplicate', id} | {'conflict', id} | {'full', jobs queued}.
local r = cjson.decode(ARGV[2])
if r.idem ~= '' then
  -- (a space never occurs in a tenant's name or a key: a run's keys and a job's never meet)
  local seen = idempotent(K.idem .. r.tenant .. ' run:' .. r.idem, r.id, r.body)
  if seen then return seen end
end
local full = over_quota(r.tenant, #r.jobs, r.max_queued)
if full then return full end
local now = now_ms()
if r.group ~= '' then
  local gk = group_key('rungroup', r.tenant, r.group)
  for _, old in ipairs(redis.call('SMEMBERS', gk)) do
    redis.call('HSET', K.run .. old, 'superseded_by', r.id)
    cancel_run(old, 'superseded by run ' .. r.id, 'superseded', now)
  end
  redis.call('SADD', gk, r.id)
end
local ids = {}
for i, a in ipairs(r.jobs) do ids[i] = a.id end
local seq = redis.call('INCR', K.seq)
-- The run is written before its jobs: a job of it superseded by a later one of it (a
-- concurrency group) already counts as ended.
redis.call('HSET', K.run .. r.id, 'id', r.id, 'tenant', r.tenant, 'name', r.name, 'labels', r.labels,
  'group', r.group, 'callback', r.callback, 'jobs', cjson.encode(ids), 'total', #ids, 'ended', 0,
  'created_at', now, 'seq', seq, 'graph', r.graph or '', 'pool', r.jobs[1].pool)
redis.call('ZADD', K.runs, seq, r.id)
redis.call('ZADD', K.tenant_runs .. r.tenant, seq, r.id)
redis.call('HINCRBY', K.stats .. r.jobs[1].pool, 'runs_submitted_total', 1)  -- a run counts in its first job's pool
for _, a in ipairs(r.jobs) do
  a.run = r.id
  enqueue_job(a, now)
end
return {'created', r.id, now}
