-- A refused request (401/403) into the audit trail, at most a limit per client a minute
-- (farm.store.audit says why). ARGV: config, retention (ms), the limit per bucket, buckets
-- kept a minute, the refusal's bucket (JSON [client, tenant, status]; '' only settles a past
-- minute), then the record's fields as name, value pairs.
-- The auditrefused hash holds the minute it counts (field '') and a count per bucket. The
-- first refusal seen in a later minute (or a read of the trail) settles the past one: a
-- summary per bucket that went past the limit, with how many were only counted.
-- Returns 1 when the refusal was recorded, 0 when it was only counted.
-- edges: none

local retention, limit, max_buckets = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local bucket = ARGV[5]
local now = now_ms()
local minute = math.floor(now / 60000)
local minid = fmt(now - retention)

local function append(fields)
  redis.call('XADD', K.audit, 'MINID', '~', minid, '*', unpack(fields))
end

local held = redis.call('HGET', K.auditrefused, '')
if held ~= fmt(minute) then
  if held then
    local counts = redis.call('HGETALL', K.auditrefused)
    for i = 1, #counts, 2 do
      local n = tonumber(counts[i + 1])
      if counts[i] ~= '' and n > limit then
        local b = cjson.decode(counts[i])
        append({'client', b[1], 'tenant', b[2], 'action', 'auth.refused.suppressed', 'status', tostring(b[3]),
                'count', fmt(n - limit), 'window_ms', fmt(tonumber(held) * 60000)})
      end
    end
  end
  redis.call('DEL', K.auditrefused)
  redis.call('HSET', K.auditrefused, '', fmt(minute))
end
if bucket == '' then return 0 end

-- Past max_buckets clients this minute, a new one is counted with every other newcomer:
-- the hash (and the summaries it leads to) stays small however many addresses a flood has.
if redis.call('HEXISTS', K.auditrefused, bucket) == 0 and redis.call('HLEN', K.auditrefused) > max_buckets then
  bucket = '["*","",0]'
end
if redis.call('HINCRBY', K.auditrefused, bucket, 1) > limit then return 0 end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
append(fields)
return 1
