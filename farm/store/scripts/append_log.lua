-- edges: none
-- Append output of the current attempt, capped at cap bytes per job.
-- ARGV id, attempt, data, cap. Returns 1 written, 0 dropped (over the cap), -1 stale attempt.
local id, attempt, data, cap = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local jk = K.job .. id
local f = redis.call('HMGET', jk, 'attempt', 'log_truncated')
if f[1] ~= attempt then return -1 end
if f[2] == '1' then return 0 end
local total = redis.call('HINCRBY', jk, 'log_bytes', #data)
if total <= cap then
  redis.call('XADD', K.log .. id, '*', 'a', attempt, 'd', data)
  return 1
end
local room = cap - (total - #data)
if room > 0 then
  redis.call('XADD', K.log .. id, '*', 'a', attempt, 'd', string.sub(data, 1, room))
end
redis.call('HSET', jk, 'log_truncated', 1)
note(id, attempt, 'log truncated at ' .. cap .. ' bytes; further output is dropped')
return 0
