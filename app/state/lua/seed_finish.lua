-- The seed job ended. ARGV[4..]: epoch, success, fileLength, rawLength, realMd5, pieceTotal, error,
-- reason, unreachTtlSeconds
local taskk = k('task')
local st = redis.call('HMGET', taskk, 'seedEpoch', 'cdnStatus')
if st[1] ~= ARGV[4] or st[2] ~= 'RUNNING' then return 0 end
if ARGV[5] == '1' then
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
