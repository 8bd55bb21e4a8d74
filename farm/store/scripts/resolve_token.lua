-- edges: none
-- Who a bearer token is, in one round trip: the token's record by the sha256 of its secret,
-- refused when revoked (its hash is gone), expired, or of a disabled tenant. Notes the last
-- use at most once a minute (a write per request would cost every request a write).
-- ARGV sha256. Returns {'ok', id, tenant, role, name, tier, weight, ms left until it expires
-- (-1: never)}, {'unknown'}, or {reason, id, tenant, role, name} for a token farm knows but
-- refuses (reason: expired, disabled), so the refusal is recorded under the token.
local sha = ARGV[2]
local id = redis.call('HGET', K.tokenhash, sha)
if not id then return {'unknown'} end
local tk = K.token .. id
local f = redis.call('HMGET', tk, 'tenant', 'role', 'name', 'tier', 'expires', 'revoked', 'last_used', 'sha256')
if f[8] ~= sha or (f[6] and f[6] ~= '') then return {'unknown'} end
local now = now_ms()
if f[5] and f[5] ~= '' and tonumber(f[5]) <= now then return {'expired', id, f[1], f[2], f[3] or ''} end
local a = redis.call('HMGET', K.account .. f[1], 'disabled', 'weight')
if a[1] == '1' then return {'disabled', id, f[1], f[2], f[3] or ''} end
if now - tonumber(f[7] or '0') > 60000 then redis.call('HSET', tk, 'last_used', now) end
local left = (f[5] and f[5] ~= '') and (tonumber(f[5]) - now) or -1
return {'ok', id, f[1], f[2], f[3] or '', f[4] or 'unprotected', a[2] or '1', left}
