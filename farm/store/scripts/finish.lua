#!lua flags=allow-oom
-- edges: running->succeeded, running->failed, running->timed_out
-- An executor records the end of its attempt (running -> succeeded|failed|timed_out).
-- ARGV[2]: JSON of the attempt's end (JobStore.finish): id, attempt, state, exit_code and
-- error ('' for none), steps, artifacts, caches, image ('' for none) and warnings (each the
-- JSON kept on the job), log (the attempt's last log segments, JSON, '' for none), log_cap
-- and log_head; every value a string except log_cap and log_head. The last output is
-- appended before the end marker, so a fast job costs one round trip here, not two.
-- Returns 'ok', 'stale', 'gone', 'fenced', or the job's state if it already left running.
-- A busy executor's registry entry becomes idle (a draining one stays draining).
local a = cjson.decode(ARGV[2])
local id, attempt, state = a.id, a.attempt, a.state
if state ~= 'succeeded' and state ~= 'failed' and state ~= 'timed_out' then
  return redis.error_reply('finish: illegal target state ' .. state)
end
local jk = K.job .. id
local f = redis.call('HMGET', jk, 'state', 'attempt', 'fence')
if not f[1] then return 'gone' end
if f[2] ~= attempt then return 'stale' end
if f[1] ~= 'running' then return f[1] end
if f[3] then return 'fenced' end  -- its lease expired: the node decides, and the job runs again
if a.log ~= '' then append(id, attempt, a.log, a.log_cap, a.log_head) end
redis.call('HSET', jk, 'exit_code', a.exit_code, 'steps', a.steps, 'artifacts', a.artifacts, 'caches', a.caches, 'image', a.image,
  'warnings', a.warnings)
local now = now_ms()
local g = redis.call('HMGET', jk, 'executor', 'pool')
terminate(id, state, a.error, now)
if redis.call('HGET', K.executor .. g[1], 'state') == 'busy' then
  executor_state(g[1], g[2], 'idle', '', now)
end
return 'ok'
