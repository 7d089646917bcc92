-- GET /api/v1/tasks?status=...: the page (newest first) of the live index whose cdnStatus matches,
-- and how many match, in one call: 10,000 tasks cost Redis a few milliseconds here, where a
-- pipelined read of each task costs the replica a second of parsing. Read-only.
-- KEYS[1]: df:tasks. The task hashes it reads are named by the index, in other slots: one Redis only
-- (on a Redis Cluster app/state/listing.py reads them pipelined). ARGV[4..]: status ('' = any), offset, limit
local status, offset, limit = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local tids = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', NOW - TTL * 1000)
local total, page = 0, {}
for _, tid in ipairs(tids) do
  local s = redis.call('HGET', 'df:{' .. tid .. '}:task', 'cdnStatus')
  if s and (status == '' or s == status) then
    if total >= offset and #page < limit then page[#page + 1] = tid end
    total = total + 1
  end
end
return {total, page}
