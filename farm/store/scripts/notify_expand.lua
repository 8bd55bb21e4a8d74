-- edges: none
-- Fan one end out to its deliveries, in one step: each delivery's hash is written and it is
-- queued, leased lease_ms to the caller (which sends it at once), and the end leaves the
-- queue. Two notifiers that both claimed the end fan it out once: the second finds it gone.
-- ARGV end ("job:<id>"), lease_ms, deliveries (JSON [{id, tenant, sub, event}]).
-- Returns 1, or 0 when the end was not queued any more.
local ended = ARGV[2]
if not redis.call('ZSCORE', K.notifyq, ended) then return 0 end
redis.call('ZREM', K.notifyq, ended)
local due = now_ms() + tonumber(ARGV[3])
for _, d in ipairs(cjson.decode(ARGV[4])) do
  redis.call('HSET', K.notifymsg .. d.id, 'tenant', d.tenant, 'sub', d.sub, 'event', d.event, 'attempts', 0, 'error', '')
  redis.call('ZADD', K.notifyq, due, d.id)
end
return 1
