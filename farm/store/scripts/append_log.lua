-- edges: none
-- Append log segments of the current attempt (see append in lib.lua).
-- ARGV id, attempt, segments (JSON), cap, head. Returns 1, or -1 for a stale attempt.
local id, attempt = ARGV[2], ARGV[3]
local f = redis.call('HMGET', K.job .. id, 'attempt', 'fence')
if f[1] ~= attempt or f[2] then return -1 end
return append(id, attempt, ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]))
