-- A seeder proves it is alive and still the task's one seeder (its first call claims the epoch).
-- ARGV[4..]: epoch, leaseMs, owner
local taskk = k('task')
if not seed_owner(taskk, ARGV[4], ARGV[6]) then return 0 end
redis.call('HSET', taskk, 'seedLease', NOW + tonumber(ARGV[5]))
return 1
