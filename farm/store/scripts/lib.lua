-- Shared helpers, prepended to every script by farm.store.lua (one copy of each idea).
-- ARGV[1] is the JSON config: {k = key templates (farm.store.keys), wb/db = histogram
-- bounds in seconds for queue wait and job duration, as strings that name their bucket's
-- field (farm.store.stats)}. Times are Redis server ms.
local C = cjson.decode(ARGV[1])
local K = C.k

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function fmt(n)
  return string.format('%.0f', n)
end

-- Jobs a tenant has queued, kept as they enter and leave the queue (the submit scripts
-- refuse a tenant past its quota). Never below 0: a farm from before the counter starts
-- at 0 with jobs already queued.
local function queued_by(tenant, delta)
  local n = redis.call('HINCRBY', K.tqueued, tenant, delta)
  if n < 0 then redis.call('HSET', K.tqueued, tenant, 0) end
end

-- {'full', jobs queued} when `n` more jobs would take the tenant past `max` ('' for no
-- limit), else nil.
local function over_quota(tenant, n, max)
  if max == '' then return nil end
  local has = tonumber(redis.call('HGET', K.tqueued, tenant) or '0')
  if has + n > tonumber(max) then return {'full', has} end
  return nil
end

-- A run's jobs running now (n:running on the run's hash), kept as they start and stop;
-- `run` is the job's run field, read by the caller with the rest ('' or nil: no run).
local function run_running(run, delta, now)
  if not run or run == '' then return end
  redis.call('HINCRBY', K.run .. run, 'n:running', delta)
  if delta > 0 then redis.call('HSETNX', K.run .. run, 'started_at', now) end
end

-- Histogram observation into a stats hash: per-bucket (not cumulative) counts, each field
-- named by its bucket's upper bound ('wait_le:15', 'wait_le:+Inf'), so other bounds never
-- move old counts into another bucket; /metrics accumulates them.
local function observe_into(stats, name, value_s, bounds)
  local le = '+Inf'
  for _, b in ipairs(bounds) do
    if value_s <= tonumber(b) then le = b; break end
  end
  redis.call('HINCRBY', stats, name .. '_le:' .. le, 1)
  redis.call('HINCRBYFLOAT', stats, name .. '_sum', value_s)
  redis.call('HINCRBY', stats, name .. '_count', 1)
end

local function observe(pool, name, value_s, bounds)
  observe_into(K.stats .. pool, name, value_s, bounds)
end

-- What the autoscaler learns demand from: an arrival (a = queued_at), a start (w = its
-- queue wait) or an attempt's end (d = how long it ran), all in ms. Capped: an autoscaler away longer than the cap misses the oldest.
local function demand(pool, field, value)
  redis.call('XADD', K.demand .. pool, 'MAXLEN', '~', 100000, '*', field, value)
end

-- farm's own lines carry k=1: a log over its cap never loses them (see append).
local function note(id, attempt, text)
  redis.call('XADD', K.log .. id, '*', 'a', attempt, 'd', '[farm] ' .. text .. '\n', 'k', 1)
end

-- The executor registry entry (advisory, for /v1/queue and the autoscaler), kept in the
-- same step as the claim or finish that changes it, or the heartbeat that renews it while
-- the executor works, so it costs no extra round trip.
local function executor_state(executor, pool, state, job, now)
  local ek = K.executor .. executor
  redis.call('HSET', ek, 'pool', pool, 'state', state, 'job', job, 'seen', now)
  redis.call('PEXPIRE', ek, C.ex_ttl)
  redis.call('ZADD', K.executors .. pool, now, executor)
end

-- Stride scheduling between a pool's tenants: each claim charges the tenant 1/weight; the
-- backlogged tenant with the lowest pass claims next. A tenant that (re)joins starts at the
-- pool's virtual time (the pass of the last claim), so idling earns it no credit to hoard.
local function activate(pool, tenant)
  local tk = K.tenants .. pool
  if redis.call('ZSCORE', tk, tenant) then return end
  local pk = K.pass .. pool
  local own = tonumber(redis.call('HGET', pk, tenant) or '0')
  local vt = tonumber(redis.call('HGET', pk, '') or '0')
  redis.call('ZADD', tk, math.max(own, vt), tenant)
end

local function wake(pool)
  redis.call('LPUSH', K.wake .. pool, '1')
  redis.call('LTRIM', K.wake .. pool, 0, 255)
end

-- Make a queued job claimable in its tenant's queue (f: HMGET of pool, tenant, qscore).
local function enlist(id, pool, tenant, qscore)
  redis.call('ZADD', K.queue .. pool .. ':' .. tenant, qscore, id)
  activate(pool, tenant)
  wake(pool)
end

local function group_key(kind, tenant, group)
  return K[kind] .. tenant .. ':' .. group
end

-- Append an attempt's log segments (JSON [[kind, text], ...]; kind 'o' output, 'n' farm's
-- own line). An attempt keeps at most `cap` bytes of output: the first `head` bytes, and the
-- most recent (cap - head): past the cap, the oldest output after the head is deleted, and
-- the cut is counted in logcut:{id} under the head's last entry, where readers put a marker
-- line. farm's lines (k=1) are never cut, so step boundaries and the end survive.
-- log_bytes, log_head and log_cut are per attempt (a requeue resets them). Returns 1.
local function append(id, attempt, segments, cap, head)
  local jk = K.job .. id
  local lk = K.log .. id
  -- Output goes in pieces of at most a sixteenth of the tail, so a cut overshoots little.
  local piece = math.max(1024, math.floor((cap - head) / 16))
  local parts = {}
  for _, seg in ipairs(cjson.decode(segments)) do
    if seg[1] == 'n' or #seg[2] <= piece then
      parts[#parts + 1] = seg
    else
      local s, i = seg[2], 1
      while i <= #s do
        local j = math.min(#s, i + piece - 1)
        while j < #s and j > i do  -- never inside a UTF-8 character: readers decode each entry
          local b = string.byte(s, j + 1)
          if b < 128 or b >= 192 then break end
          j = j - 1
        end
        parts[#parts + 1] = {'o', string.sub(s, i, j)}
        i = j + 1
      end
    end
  end
  for _, seg in ipairs(parts) do
    local text = seg[2]
    if seg[1] == 'n' then
      redis.call('XADD', lk, '*', 'a', attempt, 'd', text, 'k', 1)
    elseif #text > 0 then
      local total = redis.call('HINCRBY', jk, 'log_bytes', #text)
      local eid = redis.call('XADD', lk, '*', 'a', attempt, 'd', text)
      if total - #text < head then
        redis.call('HSET', jk, 'log_head', eid)  -- this entry (even if it runs past head) ends the head
      end
      local cut = tonumber(redis.call('HGET', jk, 'log_cut') or '0')
      local after = redis.call('HGET', jk, 'log_head')
      if not after or after == '' then after = '0-0' end  -- a requeue empties it
      while total - cut > cap do
        local rows = redis.call('XRANGE', lk, '(' .. after, '+', 'COUNT', 64)
        if #rows == 0 then break end
        for _, row in ipairs(rows) do
          local f, size, kept = row[2], 0, false
          for i = 1, #f, 2 do
            if f[i] == 'k' then kept = true elseif f[i] == 'd' then size = #f[i + 1] end
          end
          if not kept and row[1] ~= eid then
            redis.call('XDEL', lk, row[1])
            cut = cut + size
            if total - cut <= cap then break end
          end
          after = row[1]
          if row[1] == eid then break end
        end
        if after == eid then break end
      end
      if cut > 0 then
        local was = tonumber(redis.call('HGET', jk, 'log_cut') or '0')
        if cut > was then
          redis.call('HSET', jk, 'log_cut', cut, 'log_truncated', 1)
          redis.call('HINCRBY', K.logcut .. id, redis.call('HGET', jk, 'log_head'), cut - was)
        end
      end
    end
  end
  return 1
end

-- Put a job (back) in the queue: claimable, counted as waiting, and in its group's set.
local function make_ready(id, pool, tenant, qscore, group, now)
  redis.call('ZADD', K.waiting .. pool, now, id)
  if group and group ~= '' then redis.call('SADD', group_key('gq', tenant, group), id) end
  enlist(id, pool, tenant, qscore)
end

-- Take a running job off the lease and timeout books (retry or end), and give back its
-- concurrency slot: the oldest job parked on the group becomes claimable again.
local function unlease(id)
  local jk = K.job .. id
  local f = redis.call('HMGET', jk, 'pool', 'tenant', 'group', 'slot')
  redis.call('ZREM', K.leases, id)
  redis.call('ZREM', K.deadlines, id)
  redis.call('SREM', K.running .. f[1], id)
  if f[4] == '1' then
    redis.call('HSET', jk, 'slot', 0)
    redis.call('HINCRBY', group_key('group', f[2], f[3]), 'running', -1)
    local parked = redis.call('ZPOPMIN', group_key('parked', f[2], f[3]))
    if #parked > 0 then enlist(parked[1], f[1], f[2], parked[2]) end
  end
end

-- Take a queued job off every queue book.
local function unqueue(id, pool, tenant, group)
  redis.call('ZREM', K.queue .. pool .. ':' .. tenant, id)
  redis.call('ZREM', K.waiting .. pool, id)
  redis.call('ZREM', K.qdeadlines, id)
  if group and group ~= '' then
    redis.call('ZREM', group_key('parked', tenant, group), id)
    redis.call('SREM', group_key('gq', tenant, group), id)
  end
end

-- A job's or a run's end, for its tenant's notifications (farm.notify): nothing but one
-- EXISTS unless the tenant subscribes to some. The thing's last outcome (a run: by its name;
-- a job: by labels.branch and its name) is read and replaced in the step that ends it, so
-- "fixed" follows the order ends happened in; the end is queued (notify_prev on its hash),
-- never sent here (farm.notifier sends).
local function notify_end(tenant, kind, id, state, now)
  if not tenant or redis.call('EXISTS', K.notify .. tenant) == 0 then return end
  local hk, thing = K[kind] .. id, nil
  if kind == 'run' then
    thing = 'run|' .. (redis.call('HGET', hk, 'name') or '')
  else
    local ok, spec = pcall(cjson.decode, redis.call('HGET', hk, 'spec') or '{}')
    local branch = ok and type(spec.labels) == 'table' and spec.labels.branch
    if type(branch) == 'string' and branch ~= '' then
      thing = 'job|' .. branch .. '|' .. (type(spec.name) == 'string' and spec.name or '')
    end
  end
  local prev = ''
  if thing then
    local last = K.outcomes .. tenant
    prev = redis.call('HGET', last, thing) or ''
    if state == 'succeeded' then
      redis.call('HSET', last, thing, 'ok')
    elseif state == 'failed' or state == 'timed_out' or state == 'expired' then
      redis.call('HSET', last, thing, 'failed')
    end  -- a cancel (or a supersede) neither breaks nor fixes anything
  end
  redis.call('HSET', hk, 'notify_prev', prev)
  redis.call('ZADD', K.notifyq, now, kind .. ':' .. id)
end

-- A job of a run ended: count it; when it was the run's last, the run ends with an outcome
-- (farm.models.RunState: succeeded if all did, failed if one failed, timed out or expired,
-- else cancelled), its metrics, its webhook and its notifications.
local function run_job_ended(run, state, now)
  local rk = K.run .. run
  redis.call('HINCRBY', rk, 'n:' .. state, 1)
  local ended = redis.call('HINCRBY', rk, 'ended', 1)
  local f = redis.call('HMGET', rk, 'total', 'created_at', 'tenant', 'group', 'callback',
    'n:succeeded', 'n:failed', 'n:timed_out', 'n:expired')
  if not f[1] or ended < tonumber(f[1]) then return end
  local outcome = 'cancelled'
  if tonumber(f[6] or '0') == tonumber(f[1]) then
    outcome = 'succeeded'
  elseif tonumber(f[7] or '0') + tonumber(f[8] or '0') + tonumber(f[9] or '0') > 0 then
    outcome = 'failed'
  end
  redis.call('HSET', rk, 'finished_at', now, 'outcome', outcome)
  redis.call('ZADD', K.runs_finished, now, run)
  if f[4] ~= '' then redis.call('SREM', group_key('rungroup', f[3], f[4]), run) end
  -- It counts in its pool's stats: the pool of its first job (run_submit keeps it on the
  -- run; a run submitted before that reads it from the job, while that is kept).
  local pool = redis.call('HGET', rk, 'pool')
  if not pool then
    local first = cjson.decode(redis.call('HGET', rk, 'jobs') or '[]')[1]
    pool = first and redis.call('HGET', K.job .. first, 'pool')
  end
  if pool then
    redis.call('HINCRBY', K.stats .. pool, 'runs_total:' .. outcome, 1)
    observe(pool, 'run_duration', (now - tonumber(f[2])) / 1000, C.db)
  end
  if f[5] ~= '' then
    redis.call('HSET', rk, 'webhook', 'pending')
    redis.call('ZADD', K.webhooks, now, 'run:' .. run)
  end
  notify_end(f[3], 'run', run, outcome, now)
end

-- What a job's end means for the jobs of its run that need it (below terminate, which it calls).
local release

-- The one way a job reaches a terminal state
-- (queued|running -> succeeded|failed|cancelled|timed_out|expired).
local function terminate(id, state, err, now)
  local jk = K.job .. id
  local f = redis.call('HMGET', jk, 'pool', 'started_at', 'state', 'attempt', 'tenant', 'group', 'callback', 'run')
  local pool, started, prev, attempt = f[1], f[2], f[3], f[4]
  if prev == 'running' then
    unlease(id)
    run_running(f[8], -1, now)
  else
    unqueue(id, pool, f[5], f[6])
    queued_by(f[5], -1)
  end
  redis.call('ZREM', K.fencing, id)  -- a fence of an attempt of a job that ended: the node still clears it, nothing waits on it
  redis.call('HSET', jk, 'state', state, 'error', err, 'finished_at', now)
  redis.call('ZADD', K.finished, now, id)
  redis.call('HINCRBY', K.stats .. pool, 'finished_total:' .. state, 1)
  if prev == 'running' and started and started ~= '' then
    observe(pool, 'duration', (now - tonumber(started)) / 1000, C.db)
    demand(pool, 'd', now - tonumber(started))
  end
  redis.call('XADD', K.log .. id, '*', 'a', attempt, 'e', state)
  if f[7] and f[7] ~= '' then
    redis.call('HSET', jk, 'webhook', 'pending')
    redis.call('ZADD', K.webhooks, now, id)
  end
  if f[8] and f[8] ~= '' then
    release(id, state, err, now)
    run_job_ended(f[8], state, now)
  else
    notify_end(f[5], 'job', id, state, now)  -- a job of a run is told of by its run
  end
end

-- A job of a run ended: each job of the run that needs it and still waits (`blocked`, the
-- count of its needs not yet succeeded) counts one less when it succeeded, and becomes
-- claimable at 0, its queue wait (and queue timeout) starting then; when it did not
-- succeed, each is cancelled, `needs_failed` (or the cancel's own reason when it was
-- cancelled or superseded), and so on down the graph. `after` lists the job's dependents.
release = function(id, state, err, now)
  local f = redis.call('HMGET', K.job .. id, 'after', 'name')
  if not f[1] or f[1] == '' or f[1] == '[]' then return end
  local who = (f[2] and f[2] ~= '') and f[2] or id
  for _, dep in ipairs(cjson.decode(f[1])) do
    local dk = K.job .. dep
    local g = redis.call('HMGET', dk, 'state', 'blocked', 'attempt')
    if g[1] == 'queued' and tonumber(g[2] or '0') > 0 then
      if state == 'succeeded' then
        if redis.call('HINCRBY', dk, 'blocked', -1) == 0 then
          local h = redis.call('HMGET', dk, 'pool', 'tenant', 'qscore', 'group', 'qtimeout')
          redis.call('HSET', dk, 'ready_at', now)
          if h[5] and h[5] ~= '' then redis.call('ZADD', K.qdeadlines, now + tonumber(h[5]), dep) end
          make_ready(dep, h[1], h[2], h[3], h[4], now)
        end
      else
        local why = 'needs_failed'
        if err == 'cancelled' or err == 'superseded' then why = err end
        note(dep, g[3], 'not run: it needs ' .. who .. ', which ended ' .. state)
        terminate(dep, 'cancelled', why, now)
      end
    end
  end
end

-- A running attempt whose executor is lost ends: the job goes back to the queue as the next
-- attempt (running -> queued) within its retry budget, else fails with executor_lost. The
-- caller has made sure nothing of the attempt still runs (a node's fence), or that its node
-- is gone. Returns 'requeued' or 'lost'.
local function requeue_or_lose(id, why, now)
  local jk = K.job .. id
  local f = redis.call('HMGET', jk, 'attempt', 'retries', 'pool', 'qscore', 'tenant', 'group', 'node', 'run')
  local attempt, pool = tonumber(f[1]), f[3]
  redis.call('HDEL', jk, 'fence')
  redis.call('ZREM', K.fencing, id)
  if f[7] and f[7] ~= '' then redis.call('ZREM', K.fences .. f[7], id) end
  if attempt <= tonumber(f[2]) then
    unlease(id)
    run_running(f[8], -1, now)
    queued_by(f[5], 1)
    redis.call('HSET', jk, 'state', 'queued', 'attempt', attempt + 1, 'executor', '', 'node', '',
      'error', 'executor_lost', 'ready_at', now, 'log_bytes', 0, 'log_cut', 0, 'log_head', '')
    note(id, attempt, why .. '; requeued as attempt ' .. (attempt + 1))
    redis.call('HINCRBY', K.stats .. pool, 'retries_total:executor_lost', 1)
    make_ready(id, pool, f[5], f[4], f[6], now)
    return 'requeued'
  end
  note(id, attempt, why .. '; retry budget spent')
  terminate(id, 'failed', 'executor_lost', now)
  return 'lost'
end

-- An Idempotency-Key: nil the first time (it is recorded for 24 h with the id and the body's
-- hash), else {'duplicate', id} for the same body or {'conflict', id} for another.
local function idempotent(ik, id, body)
  local seen = redis.call('GET', ik)
  if not seen then
    redis.call('SET', ik, id .. ' ' .. body, 'EX', 86400)
    return nil
  end
  local sep = string.find(seen, ' ', 1, true)
  local old = string.sub(seen, 1, sep - 1)
  if string.sub(seen, sep + 1) == body then return {'duplicate', old} end
  return {'conflict', old}
end

-- The lex indexes an id prefix is resolved in (farm.store.ids): a job's id, and its run's
-- ('' for none), written with the job. A run's jobs are all made in the step that makes the
-- run, and a run has one at least, so they index it too (ZADD again is a no-op). purge.lua
-- takes them out.
local function index_ids(id, run)
  redis.call('ZADD', K.jobids, 0, id)
  if run and run ~= '' then redis.call('ZADD', K.runids, 0, run) end
end

-- Queue one job. `a` holds its fields as farm.store.jobs names them (`_enqueue_fields`):
-- id, tenant, pool, priority, retries, timeout_ms, spec (JSON), weight, group ('' for
-- none), group_limit, on_full, queue_timeout_ms ('' for none), callback ('' for none),
-- secrets (JSON of the resolved values, '' for none), rerun_of, tier (of the submitter's
-- token), run ('' for none) and source_exempt ('1': the git source was admitted under the
-- exemption; the executor does not check its host), every one a string.
local function enqueue_job(a, now)
  local id, tenant, pool, group = a.id, a.tenant, a.pool, a.group
  local priority = tonumber(a.priority)
  local seq = redis.call('INCR', K.seq)
  -- Dispatch order within a tenant: higher priority first, then submission order.
  -- (100-p)*1e13 + seq stays an exact integer in a double for 10^13 submissions.
  local qscore = fmt((100 - priority) * 1e13 + seq)
  redis.call('HSET', K.job .. id,
    'id', id, 'tenant', tenant, 'pool', pool, 'state', 'queued', 'attempt', 1,
    'priority', priority, 'retries', a.retries, 'timeout_ms', a.timeout_ms, 'spec', a.spec,
    'weight', a.weight, 'group', group, 'qscore', qscore, 'seq', seq, 'queued_at', now,
    'ready_at', now, 'log_bytes', 0, 'callback', a.callback, 'secrets', a.secrets, 'rerun_of', a.rerun_of,
    'tier', a.tier, 'run', a.run, 'source_exempt', a.source_exempt or '')
  -- A job of a run: its name, the jobs that need it (`after`), and how many of its own
  -- needs have yet to succeed (`blocked`: it waits off the queue until 0; see release).
  local blocked = tonumber(a.blocked or '0')
  if a.name and a.name ~= '' then redis.call('HSET', K.job .. id, 'name', a.name) end
  if a.after and a.after ~= '' and a.after ~= '[]' then redis.call('HSET', K.job .. id, 'after', a.after) end
  redis.call('ZADD', K.jobs, seq, id)
  redis.call('ZADD', K.tenant_jobs .. tenant, seq, id)
  index_ids(id, a.run)
  redis.call('HINCRBY', K.stats .. pool, 'submitted_total', 1)
  queued_by(tenant, 1)
  demand(pool, 'a', now)
  if group ~= '' then
    -- A group's limit is the one its latest job set.
    redis.call('HSET', group_key('group', tenant, group), 'limit', a.group_limit)
    if a.on_full == 'supersede' then
      for _, old in ipairs(redis.call('SMEMBERS', group_key('gq', tenant, group))) do
        note(old, redis.call('HGET', K.job .. old, 'attempt'), 'superseded by ' .. id)
        terminate(old, 'cancelled', 'superseded', now)
      end
    end
  end
  if blocked > 0 then
    redis.call('HSET', K.job .. id, 'blocked', blocked, 'qtimeout', a.queue_timeout_ms)
    if group ~= '' then redis.call('SADD', group_key('gq', tenant, group), id) end  -- a newer job of its group supersedes it
    -- A need that already ended (superseded by a job of this run submitted before this one)
    -- has released its dependents already: this one learns of it now.
    for _, need in ipairs(cjson.decode(a.needs_ids or '[]')) do
      local g = redis.call('HMGET', K.job .. need, 'state', 'name', 'error')
      if g[1] and g[1] ~= 'queued' and g[1] ~= 'running' then
        local why = 'needs_failed'
        if g[3] == 'cancelled' or g[3] == 'superseded' then why = g[3] end
        note(id, 1, 'not run: it needs ' .. ((g[2] and g[2] ~= '') and g[2] or need) .. ', which ended ' .. g[1])
        terminate(id, 'cancelled', why, now)
        return
      end
    end
    return
  end
  if a.queue_timeout_ms ~= '' then redis.call('ZADD', K.qdeadlines, now + tonumber(a.queue_timeout_ms), id) end
  make_ready(id, pool, tenant, qscore, group, now)
end

-- Cancel every job of a run that has not ended (queued at once; a running one's executor
-- sees it on its next heartbeat and kills the step). Returns how many.
local function cancel_run(run, why, err, now)
  local ids = redis.call('HGET', K.run .. run, 'jobs')
  if not ids then return 0 end
  local n = 0
  for _, id in ipairs(cjson.decode(ids)) do
    local f = redis.call('HMGET', K.job .. id, 'state', 'attempt')
    if f[1] == 'queued' or f[1] == 'running' then
      note(id, f[2], why)
      terminate(id, 'cancelled', err, now)
      n = n + 1
    end
  end
  return n
end
