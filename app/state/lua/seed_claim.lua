-- A seed run starts: it claims the task's CURRENT epoch, whichever epoch its own job message carried
-- (older after a lapse, newer after a failover lost a bump), and gets that epoch back (0: nothing to
-- seed, or another run holds the current epoch).
-- ARGV[4..]: leaseMs, owner
--
-- Why not only the message's own epoch: a job waiting in a long broker queue lets its lease lapse,
-- and the next pull starts a new epoch whose message joins the queue's tail. Were the older message
-- skipped as superseded, the task would go to the back of the queue at every lapse and could wait
-- forever behind newer tasks. The oldest message of the task to reach a worker runs it instead; the
-- later ones find the epoch claimed and stop.
local taskk = k('task')
local st = redis.call('HMGET', taskk, 'seedEpoch', 'cdnStatus', 'seedOwner')
local current = tonumber(st[1] or '0')
if st[2] ~= 'RUNNING' or current == 0 then return 0 end
local epoch = tostring(current)
if st[3] and string.sub(st[3], 1, #epoch + 1) == epoch .. ':' then return 0 end
redis.call('HSET', taskk, 'seedOwner', epoch .. ':' .. ARGV[5], 'seedLease', NOW + tonumber(ARGV[4]))
return current
