-- edges: running->succeeded, running->failed, running->timed_out
-- An executor records the end of its attempt (running -> succeeded|failed|timed_out).
-- ARGV id, attempt, state, exit_code ('' for none), error ('' for none), steps_json,
-- artifacts_json.
-- Returns 'ok', 'stale', 'gone', or the job's state if it already left running.
local id, attempt, state = ARGV[2], ARGV[3], ARGV[4]
if state ~= 'succeeded' and state ~= 'failed' and state ~= 'timed_out' then
  return redis.error_reply('finish: illegal target state ' .. state)
end
local jk = K.job .. id
local f = redis.call('HMGET', jk, 'state', 'attempt')
if not f[1] then return 'gone' end
if f[2] ~= attempt then return 'stale' end
if f[1] ~= 'running' then return f[1] end
redis.call('HSET', jk, 'exit_code', ARGV[5], 'steps', ARGV[7], 'artifacts', ARGV[8])
terminate(id, state, ARGV[6], now_ms())
return 'ok'
