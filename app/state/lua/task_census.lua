-- The overview's counts (GET /api/v1/overview): tasks of the live index by cdnStatus, the RUNNING
-- seeds' bytes, and preheats by status, in one read-only call instead of one read per task.
-- KEYS[1]: df:tasks, KEYS[2]: df:{preheats} (its records df:{preheats}:<id> share its slot). The task
-- hashes are named by the index, in other slots: one Redis only (on a Redis Cluster
-- app/state/listing.py reads them pipelined).
-- Returns a flat list: name, count, name, count, ... ('task:<status>', 'seedBytes', 'preheat:<status>')
local counts = {}
local function add(name, n) counts[name] = (counts[name] or 0) + n end
for _, tid in ipairs(redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', NOW - TTL * 1000)) do
  local f = redis.call('HMGET', 'df:{' .. tid .. '}:task', 'cdnStatus', 'seedBytes')
  if f[1] then
    add('task:' .. f[1], 1)
    if f[1] == 'RUNNING' then add('seedBytes', tonumber(f[2] or '0') or 0) end
  end
end
for _, pid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local s = redis.call('HGET', KEYS[2] .. ':' .. pid, 'status')
  if s then add('preheat:' .. s, 1) end
end
local out = {}
for name, n in pairs(counts) do out[#out + 1] = name; out[#out + 1] = n end
return out
