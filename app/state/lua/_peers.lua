-- Shared by register.lua and peer_record.lua: one record of the cluster-wide peer list, and the
-- pruning of records older than the task TTL. `peers` (df:{peers}) and `seen` (df:{peers}:seen)
-- share a hash tag: one slot, so this stays one atomic step on a Redis Cluster too.
local function record_peer(peers, seen, id, json)
  redis.call('HSET', peers, id, json)
  redis.call('ZADD', seen, NOW, id)
  local stale = redis.call('ZRANGEBYSCORE', seen, '-inf', NOW - TTL * 1000, 'LIMIT', 0, 100)
  if #stale > 0 then
    redis.call('HDEL', peers, unpack(stale))
    redis.call('ZREM', seen, unpack(stale))
  end
end
