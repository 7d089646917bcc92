-- A preheat runner starts (epoch ARGV[4]): it owns the job if the epoch is current and the job is
-- waiting, or running under a lapsed lease (a redelivered Celery job after its worker died).
-- A duplicate delivery while the owner is alive gets 0. KEYS[1]: df:preheat:<id>. ARGV[5]: leaseMs
local rec = KEYS[1]
local st = redis.call('HMGET', rec, 'epoch', 'status', 'lease')
if st[1] ~= ARGV[4] then return 0 end
if st[2] == 'WAITING' or (st[2] == 'RUNNING' and NOW > tonumber(st[3] or '0')) then
  redis.call('HSET', rec, 'status', 'RUNNING', 'lease', NOW + tonumber(ARGV[5]), 'updatedMs', NOW)
  return 1
end
return 0
