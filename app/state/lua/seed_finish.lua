-- The seed job ended. ARGV[4..]: epoch, success, fileLength, rawLength, realMd5, pieceTotal, error,
-- reason, unreachTtlSeconds, owner
-- Returns 0 when the caller is not the task's seeder, 2 when a success lists fewer pieces than it
-- has (published pieces lost in a failover: the seeder publishes them again and reports again; a task
-- sealed without them would leave its clients waiting for good), 1 when recorded.
local taskk = k('task')
if not seed_owner(taskk, ARGV[4], ARGV[13]) then return 0 end
if ARGV[5] == '1' then
  if redis.call('HLEN', k('cdn')) < tonumber(ARGV[9]) then return 2 end
  redis.call('HSET', taskk, 'cdnStatus', 'SUCCESS', 'fileLength', ARGV[6], 'rawLength', ARGV[7],
    'realMd5', ARGV[8], 'pieceTotal', ARGV[9], 'seedFinished', NOW, 'seedBytes', ARGV[7])
else
  redis.call('HSET', taskk, 'cdnStatus', 'FAILED', 'seedError', ARGV[10], 'seedReason', ARGV[11],
    'seedFinished', NOW)
  local ttl = tonumber(ARGV[12])
  if ARGV[11] == 'not_found' and ttl > 0 then redis.call('SET', k('unreach'), ARGV[10], 'EX', ttl) end
end
touch(taskk)
return 1
