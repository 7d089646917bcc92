-- Publish pieces that are durable in the seed cache, so peers can fetch them at once.
-- ARGV[4..]: epoch, leaseMs, seededBytes, firstPieceNum, md5...
local taskk, cdnk = k('task'), k('cdn')
local st = redis.call('HMGET', taskk, 'seedEpoch', 'cdnStatus')
if st[1] ~= ARGV[4] or st[2] ~= 'RUNNING' then return 0 end
local first = tonumber(ARGV[7])
for i = 8, #ARGV do redis.call('HSET', cdnk, first + i - 8, ARGV[i]) end
touch(cdnk)
redis.call('HSET', taskk, 'seedLease', NOW + tonumber(ARGV[5]), 'seedBytes', ARGV[6],
  'seedPieces', redis.call('HLEN', cdnk))
return 1
