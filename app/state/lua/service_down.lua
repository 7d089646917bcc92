-- /peer/service/down (PROTOCOL §5.5): the cid's peer server is going away. Never offer it again
-- for this task, and end whatever it still had in flight. ARGV[4..]: cid
local cid = ARGV[4]
local dtk = k('dt:' .. cid)
if redis.call('EXISTS', dtk) == 0 then return 0 end
redis.call('HSET', dtk, 'down', 1, 'downAt', NOW)
for _, n in ipairs(redis.call('HKEYS', k('run:' .. cid))) do release(cid, n) end
return 1
