-- edges: none
-- Commit a saved cache entry in one step, after its blobs are stored: readers never see a
-- partial entry. ARGV tenant, repo, tier, ref, key, entry id, manifest digest, bytes, blobs
-- (JSON list, the manifest included), now. The first writer of (scope, key) wins; a later
-- one gets {'exists', id} and its blobs are released by the caller.
-- Returns {'ok', id} | {'exists', id}.
local tenant, repo, tier, ref, key, id = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local bytes, now = tonumber(ARGV[9]), tonumber(ARGV[11])
local zk = K.cachekeys .. tenant .. '|' .. repo
local prefix = key .. '\0' .. tier .. '\0' .. ref .. '\0'
local found = redis.call('ZRANGEBYLEX', zk, '[' .. prefix, '[' .. prefix .. '\255', 'LIMIT', 0, 1)
if #found > 0 then return {'exists', string.sub(found[1], #prefix + 1)} end
local member = prefix .. id
redis.call('ZADD', zk, 0, member)
redis.call('HSET', K.cacheentry .. id, 'tenant', tenant, 'repo', repo, 'tier', tier, 'ref', ref, 'key', key,
  'manifest', ARGV[8], 'bytes', bytes, 'blobs', ARGV[10], 'member', member, 'created', now, 'used', now)
redis.call('ZADD', K.cachelru .. tenant, now, id)
redis.call('HINCRBY', K.cachebytes .. tenant, tier, bytes)
for _, blob in ipairs(cjson.decode(ARGV[10])) do redis.call('HINCRBY', K.cacherefs, blob, 1) end
return {'ok', id}
