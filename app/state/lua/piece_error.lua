-- /peer/piece/error (PROTOCOL §5.4): the requester could not get a piece from dst.
-- FILE_NOT_EXIST means dst no longer has the task's file: stop offering dst to anyone.
-- Any error keeps dst away from this requester. ARGV[4..]: srcCid, dst, errorType, cdnDst
local src, dst, error_type, cdn_dst = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
if dst == '' or dst == cdn_dst then return 0 end
local dstk = k('dt:' .. dst)
if redis.call('EXISTS', dstk) == 0 then return 0 end
if redis.call('EXISTS', k('dt:' .. src)) == 1 then
  local blk = k('black:' .. src)
  redis.call('SADD', blk, dst)
  touch(blk)
end
if error_type == 'FILE_NOT_EXIST' then redis.call('HSET', dstk, 'down', 1) end
return 1
