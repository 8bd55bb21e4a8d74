-- edges: none
-- Find the cache entry a job restores. ARGV tenant, repo, tier, ref, now, then the
-- candidates: the exact key first, then the restore-key prefixes, in order. For each
-- candidate the job's own (tier, ref) comes first, then the protected tier (any ref); among
-- several prefix matches the newest wins. Never an unprotected entry of another ref, never
-- an unprotected entry for a protected job. Marks the entry used (LRU).
-- Returns {entry id, matched key, 'exact'|'prefix'} or false.
local tenant, repo, tier, ref, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local zk = K.cachekeys .. tenant .. '|' .. repo
local function split(m)
  local parts = {}
  for part in string.gmatch(m .. '\0', '([^%z]*)%z') do parts[#parts + 1] = part end
  return parts
end
for i = 7, #ARGV do
  local cand, exact = ARGV[i], i == 7
  local lo = '[' .. cand .. (exact and '\0' or '')
  local hi = '[' .. cand .. (exact and '\0\255' or '\255')
  local own, own_at, prot, prot_at = nil, -1, nil, -1
  for _, m in ipairs(redis.call('ZRANGEBYLEX', zk, lo, hi)) do
    local p = split(m)  -- key, tier, ref, id
    local created = tonumber(redis.call('HGET', K.cacheentry .. p[4], 'created') or '-1')
    if p[2] == tier and p[3] == ref then
      if created > own_at then own, own_at = p, created end
    elseif p[2] == 'protected' then
      if created > prot_at then prot, prot_at = p, created end
    end
  end
  local hit = own or prot
  if hit then
    redis.call('HSET', K.cacheentry .. hit[4], 'used', now)
    redis.call('ZADD', K.cachelru .. tenant, now, hit[4])
    return {hit[4], hit[1], exact and 'exact' or 'prefix'}
  end
end
return false
