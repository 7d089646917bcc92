-- Shared by the seed_* scripts. A seed job is the task's one seeder when its epoch is current, the
-- task still RUNNING, and the epoch claimed by this run (seedOwner = "<epoch>:<run id>"). A run claims
-- the current epoch as it starts (seed_claim.lua); a second run of that epoch (a duplicate or
-- redelivered Celery message, or an epoch number handed out again after a failover lost its bump)
-- finds it claimed by another run and stops, so two processes never seed one task at once. A claim
-- lost in a failover is simply taken again by the next write of a run of that epoch.
local function seed_owner(taskk, epoch, owner)
  local st = redis.call('HMGET', taskk, 'seedEpoch', 'cdnStatus', 'seedOwner')
  if st[1] ~= epoch or st[2] ~= 'RUNNING' then return false end
  local mine = epoch .. ':' .. owner
  if st[3] == mine then return true end
  if st[3] and string.sub(st[3], 1, #epoch + 1) == epoch .. ':' then return false end
  redis.call('HSET', taskk, 'seedOwner', mine)
  return true
end
