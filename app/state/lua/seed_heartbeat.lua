-- A seeder proves it is alive and still the task's one seeder. ARGV[4..]: epoch, leaseMs
local taskk = k('task')
local st = redis.call('HMGET', taskk, 'seedEpoch', 'cdnStatus')
if st[1] ~= ARGV[4] or st[2] ~= 'RUNNING' then return 0 end
redis.call('HSET', taskk, 'seedLease', NOW + tonumber(ARGV[5]))
return 1
