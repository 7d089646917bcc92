-- The runner of epoch ARGV[4] reports progress (and renews its lease), or finishes the job by
-- setting status SUCCESS/FAILED. 0: the job was restarted, deleted or finished; the runner stops.
-- KEYS[1]: df:preheat:<id>. ARGV[5..]: leaseMs, retentionSeconds, field, value, field, value, ...
local rec = KEYS[1]
local st = redis.call('HMGET', rec, 'epoch', 'status')
if st[1] ~= ARGV[4] or st[2] ~= 'RUNNING' then return 0 end
for i = 7, #ARGV, 2 do redis.call('HSET', rec, ARGV[i], ARGV[i + 1]) end
redis.call('HSET', rec, 'lease', NOW + tonumber(ARGV[5]), 'updatedMs', NOW)
local status = redis.call('HGET', rec, 'status')
if status == 'SUCCESS' or status == 'FAILED' then
  redis.call('HSET', rec, 'finishMs', NOW)
  redis.call('EXPIRE', rec, tonumber(ARGV[6]))
end
return 1
