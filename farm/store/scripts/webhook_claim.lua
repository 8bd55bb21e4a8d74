#!lua flags=allow-oom
-- edges: none
-- Lease due result webhooks to one deliverer: each claimed id is pushed lease_ms into the
-- future, so another deliverer does not send it at the same time; a deliverer that dies
-- leaves it to come due again. ARGV lease_ms, limit. Returns the claimed ids.
-- A run's webhook ("run:<id>") goes after every job webhook of the run: while one of its
-- jobs' is still pending (due, or being sent), it is left for a second and not claimed.
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', K.webhooks, '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local claimed = {}
for _, id in ipairs(ids) do
  local wait = false
  if string.sub(id, 1, 4) == 'run:' then
    local jobs = redis.call('HGET', K.run .. string.sub(id, 5), 'jobs')
    for _, job in ipairs(jobs and cjson.decode(jobs) or {}) do
      if redis.call('HGET', K.job .. job, 'webhook') == 'pending' then wait = true; break end
    end
  end
  if wait then
    redis.call('ZADD', K.webhooks, now + 1000, id)
  else
    redis.call('ZADD', K.webhooks, now + tonumber(ARGV[2]), id)
    claimed[#claimed + 1] = id
  end
end
return claimed
