-- edges: none
-- Replace a pool's capacity policy, keeping the audit trail. ARGV pool, policy json, who,
-- expected version ('' = any). Returns {'ok', version} or {'conflict', current version}.
local pk = K.policy .. ARGV[2]
local current = tonumber(redis.call('HGET', pk, 'version') or '0')
if ARGV[5] ~= '' and tonumber(ARGV[5]) ~= current then return {'conflict', current} end
local now = now_ms()
local before = redis.call('HGET', pk, 'policy') or 'null'
local version = current + 1
redis.call('HSET', pk, 'version', version, 'policy', ARGV[3], 'by', ARGV[4], 'at', now)
-- The policies are spliced in as the JSON they are: a decode and encode in Lua would turn an
-- empty list ([]) into an empty object ({}).
redis.call('LPUSH', K.policy_audit .. ARGV[2], '{"version":' .. version .. ',"by":' .. cjson.encode(ARGV[4]) ..
  ',"at":' .. now .. ',"before":' .. before .. ',"after":' .. ARGV[3] .. '}')
redis.call('LTRIM', K.policy_audit .. ARGV[2], 0, 999)
return {'ok', version}
