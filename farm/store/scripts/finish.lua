-- edges: running->succeeded, running->failed, running->timed_out
-- An executor records the end of its attempt (running -> succeeded|failed|timed_out).
-- ARGV id, attempt, state, exit_code ('' for none), error ('' for none), steps_json,
-- artifacts_json, the attempt's last log segments (JSON, '' for none), log cap, caches_json,
-- image_json ('' for none), log head, warnings_json. The last output is
-- appended before the end marker, so a fast job costs one round trip here, not two.
-- Returns 'ok', 'stale', 'gone', or the job's state if it already left running.
-- A busy executor's registry entry becomes idle (a draining one stays draining).
local id, attempt, state = ARGV[2], ARGV[3], ARGV[4]
if state ~= 'succeeded' and state ~= 'failed' and state ~= 'timed_out' then
  return redis.error_reply('finish: illegal target state ' .. state)
end
local jk = K.job .. id
local f = redis.call('HMGET', jk, 'state', 'attempt', 'fence')
if not f[1] then return 'gone' end
if f[2] ~= attempt then return 'stale' end
if f[1] ~= 'running' then return f[1] end
if f[3] then return 'fenced' end  -- its lease expired: the node decides, and the job runs again
if ARGV[9] ~= '' then append(id, attempt, ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[13])) end
redis.call('HSET', jk, 'exit_code', ARGV[5], 'steps', ARGV[7], 'artifacts', ARGV[8], 'caches', ARGV[11], 'image', ARGV[12],
  'warnings', ARGV[14])
local now = now_ms()
local g = redis.call('HMGET', jk, 'executor', 'pool')
terminate(id, state, ARGV[6], now)
if redis.call('HGET', K.executor .. g[1], 'state') == 'busy' then
  executor_state(g[1], g[2], 'idle', '', now)
end
return 'ok'
