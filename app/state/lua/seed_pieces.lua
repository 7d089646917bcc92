-- Publish pieces that are durable in the seed cache, so peers can fetch them at once.
-- ARGV[4..]: epoch, leaseMs, seededBytes, firstPieceNum, owner, md5...
-- Returns 0 when the caller is not the task's seeder, else how many pieces the task lists now. The
-- seeder publishes in order from piece 0, so fewer than firstPieceNum + #md5s means pieces it published
-- before are gone (a failover to a replica that never got them, a restart that lost the AOF tail): it
-- then publishes all of them again, and clients waiting for them are served instead of stalling.
local taskk, cdnk = k('task'), k('cdn')
if not seed_owner(taskk, ARGV[4], ARGV[8]) then return 0 end
local first = tonumber(ARGV[7])
for i = 9, #ARGV do redis.call('HSET', cdnk, first + i - 9, ARGV[i]) end
touch(cdnk)
local listed = redis.call('HLEN', cdnk)
redis.call('HSET', taskk, 'seedLease', NOW + tonumber(ARGV[5]), 'seedBytes', ARGV[6], 'seedPieces', listed)
return listed
