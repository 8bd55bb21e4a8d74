#!lua flags=allow-oom
-- edges: none
-- Lease due notifications to one notifier (farm.notifier): each claimed member is pushed
-- lease_ms into the future, so no other notifier takes it meanwhile; one that dies leaves it
-- to come due again. Members are ends to fan out ("job:<id>", "run:<id>", queued by lib.lua
-- notify_end) and deliveries ("<end>/<subscription id>", notify_expand.lua), oldest first.
-- ARGV lease_ms, limit. Returns the claimed members.
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', K.notifyq, '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do
  redis.call('ZADD', K.notifyq, now + tonumber(ARGV[2]), member)
end
return due
