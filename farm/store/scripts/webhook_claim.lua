#!lua flags=allow-oom
-- edges: none
-- Lease due result webhooks to one deliverer: each claimed id is pushed lease_ms into the
-- future, so another deliverer does not send it at the same time; a deliverer that dies
-- leaves it to come due again. ARGV lease_ms, limit. Returns the claimed ids.
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', K.webhooks, '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZADD', K.webhooks, now + tonumber(ARGV[2]), id)
end
return ids
