-- Create a preheat record, or restart it: a repeated create of a finished (SUCCESS or FAILED) preheat
-- runs it again, and so does one whose runner stopped renewing its lease. A preheat that is waiting or
-- running keeps going (the caller answers with the same id). KEYS[1]: df:preheat:<id>, KEYS[2]:
-- df:preheats. ARGV[4..]: id, request fields (JSON object of strings), retentionSeconds, waitLeaseMs
local rec, index = KEYS[1], KEYS[2]
local st = redis.call('HMGET', rec, 'status', 'lease')
if (st[1] == 'WAITING' or st[1] == 'RUNNING') and NOW <= tonumber(st[2] or '0') then
  return cjson.encode({epoch = 0, previous = st[1]})
end
local retention = tonumber(ARGV[6])
local epoch = redis.call('HINCRBY', rec, 'epoch', 1)
for name, value in pairs(cjson.decode(ARGV[5])) do redis.call('HSET', rec, name, value) end
redis.call('HSET', rec, 'id', ARGV[4], 'status', 'WAITING', 'errorMsg', '', 'startMs', NOW, 'finishMs', 0,
  'updatedMs', NOW, 'lease', NOW + tonumber(ARGV[7]), 'layers', '[]')
redis.call('EXPIRE', rec, retention)
redis.call('ZADD', index, NOW, ARGV[4])
-- Records expire by themselves; the index forgets them after the same retention.
redis.call('ZREMRANGEBYSCORE', index, '-inf', NOW - retention * 1000)
return cjson.encode({epoch = epoch, previous = st[1] or ''})
