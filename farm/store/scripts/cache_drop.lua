#!lua flags=allow-oom
-- edges: none
-- Drop cache entries: by id (ARGV mode 'ids', then ids), or evict a tenant's least recently
-- used entries until it is within quota (ARGV 'evict', tenant, quota bytes, bytes reserved
-- for the protected tier). Eviction takes unprotected entries only while protected ones use
-- no more than their reserve, so pull-request churn cannot push the default branch out.
-- Returns {dropped ids..., '', blob digests no entry refers to any more...}.
local dropped, freed = {}, {}
local function drop(id)
  local e = redis.call('HMGET', K.cacheentry .. id, 'tenant', 'repo', 'tier', 'bytes', 'blobs', 'member')
  if not e[1] then return end
  redis.call('ZREM', K.cachekeys .. e[1] .. '|' .. e[2], e[6])
  redis.call('ZREM', K.cachelru .. e[1], id)
  redis.call('HINCRBY', K.cachebytes .. e[1], e[3], -tonumber(e[4]))
  for _, blob in ipairs(cjson.decode(e[5])) do
    if redis.call('HINCRBY', K.cacherefs, blob, -1) <= 0 then
      redis.call('HDEL', K.cacherefs, blob)
      freed[#freed + 1] = blob
    end
  end
  redis.call('DEL', K.cacheentry .. id)
  dropped[#dropped + 1] = id
end
if ARGV[2] == 'ids' then
  for i = 3, #ARGV do drop(ARGV[i]) end
else
  local tenant, quota, reserve = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
  local bk, lru = K.cachebytes .. tenant, K.cachelru .. tenant
  local function used(tier) return tonumber(redis.call('HGET', bk, tier) or '0') end
  while used('protected') + used('unprotected') > quota do
    local victim = nil
    local any_tier = used('protected') > reserve
    for _, id in ipairs(redis.call('ZRANGE', lru, 0, -1)) do
      if any_tier or redis.call('HGET', K.cacheentry .. id, 'tier') ~= 'protected' then victim = id; break end
    end
    if not victim then break end
    drop(victim)
  end
end
dropped[#dropped + 1] = ''
for _, b in ipairs(freed) do dropped[#dropped + 1] = b end
return dropped
