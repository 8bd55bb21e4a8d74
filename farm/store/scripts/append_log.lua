-- edges: none
-- Append output of the current attempt, capped at cap bytes per attempt.
-- ARGV id, attempt, data, cap. Returns 1 written, 0 dropped (over the cap), -1 stale attempt.
local id, attempt = ARGV[2], ARGV[3]
local f = redis.call('HMGET', K.job .. id, 'attempt', 'fence')
if f[1] ~= attempt or f[2] then return -1 end
return append(id, attempt, ARGV[4], tonumber(ARGV[5]))
