-- PUT /api/v1/tasks/{id}/limits: one task's downLinkKiB in its task hash ('' = back to the cluster's).
-- Only a task that exists: an expired one is not brought back as a stray hash. ARGV[4]: value
local taskk = k('task')
if redis.call('EXISTS', taskk) == 0 then return 0 end
if ARGV[4] == '' then redis.call('HDEL', taskk, 'downLinkKiB') else redis.call('HSET', taskk, 'downLinkKiB', ARGV[4]) end
return 1
