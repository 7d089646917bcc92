-- [1.0.x] POST /task/metrics of a download that went back to the source (PROTOCOL §6.1, §8.8): the
-- only way the supernode learns those bytes. dfget may send the report twice: counted once per cid.
-- ARGV[4..]: cid, bytes
local cid, bytes = ARGV[4], tonumber(ARGV[5])
if redis.call('EXISTS', k('task')) == 0 then return 0 end
local bsk = k('bs')
if redis.call('SADD', bsk, cid) == 0 then return 0 end
touch(bsk)
count_traffic('source', bytes)
return with_deferred(1)
