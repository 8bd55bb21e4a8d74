-- edges: (new)->queued, queued->cancelled
-- Submit a job. ARGV[2]: JSON of its fields (lib.lua `enqueue_job`), and idem (the
-- Idempotency-Key, '' for none) and body (the sha256 of the spec, with a key).
-- max_queued ('' for none): the most jobs the tenant may have queued.
-- Returns {'created', id, queued_at_ms} | {'duplicate', id} (same key, same body) | {'conflict', id}
-- | {'full', jobs the tenant has queued}.
local a = cjson.decode(ARGV[2])
if a.idem ~= '' then
  local seen = idempotent(K.idem .. a.tenant .. ':' .. a.idem, a.id, a.body)
  if seen then return seen end
end
local full = over_quota(a.tenant, 1, a.max_queued)
if full then return full end
local now = now_ms()
enqueue_job(a, now)
return {'created', a.id, now}
