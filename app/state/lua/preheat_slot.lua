-- The cluster-wide preheat seed semaphore: a zset of holders scored by lease expiry (ms).
-- KEYS[1]: df:preheat:slots. ARGV[4..]: op ('acquire' | 'renew'), member, limit, leaseMs
-- Returns 1 when the member holds a slot afterwards, 0 otherwise.
local slots, op, member = KEYS[1], ARGV[4], ARGV[5]
local limit, lease_ms = tonumber(ARGV[6]), tonumber(ARGV[7])
-- Holders that stopped renewing (a killed worker) give their slot back by expiring.
redis.call('ZREMRANGEBYSCORE', slots, '-inf', NOW)
if redis.call('ZSCORE', slots, member) then
  redis.call('ZADD', slots, NOW + lease_ms, member)
  return 1
end
if op == 'renew' or redis.call('ZCARD', slots) >= limit then return 0 end
redis.call('ZADD', slots, NOW + lease_ms, member)
return 1
