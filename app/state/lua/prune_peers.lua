-- Drop peer records older than the task TTL, up to ARGV[4] of them (the periodic index prune,
-- app.cluster.maintenance; registrations prune 100 at a time as they come).
-- KEYS: df:{peers}, df:{peers}:seen (one slot). Returns how many went.
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', NOW - TTL * 1000, 'LIMIT', 0, tonumber(ARGV[4]))
if #stale > 0 then
  redis.call('HDEL', KEYS[1], unpack(stale))
  redis.call('ZREM', KEYS[2], unpack(stale))
end
return #stale
