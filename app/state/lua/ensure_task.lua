-- Make sure a task exists and is seeded, for a preheat (no dfget peer involved). Creates the task
-- like register.lua (after the caller's once-per-task probe) and starts its one seed job under the
-- same rules as a registration: WAITING, a stale seed, or a FAILED seed older than retryMs.
-- ARGV[4..]: tid, taskUrl, rawUrl, identifier, headersJson, httpFileLength ('' = not probed yet),
--            pieceSize, provisionalTotal, seedLeaseMs, retryMs, callSystem
local tid, task_url, raw_url, identifier, headers = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local http_len, piece_size, provisional = ARGV[9], ARGV[10], ARGV[11]
local lease_ms, retry_ms = tonumber(ARGV[12]), tonumber(ARGV[13])

local taskk = k('task')
if redis.call('EXISTS', taskk) == 1 then
  local cur = redis.call('HMGET', taskk, 'taskUrl', 'md5', 'identifier')
  -- A dfget registered this id with an md5: not the task a dfdaemon pull (or this preheat) would use.
  if cur[1] ~= task_url or cur[2] ~= '' or cur[3] ~= identifier then
    return cjson.encode({result = 'conflict'})
  end
elseif http_len == '' then
  return cjson.encode({result = 'unprobed'})
else
  redis.call('HSET', taskk, 'taskId', tid, 'taskUrl', task_url, 'rawUrl', raw_url, 'md5', '',
    'identifier', identifier, 'headers', headers, 'httpFileLength', http_len, 'pieceSize', piece_size,
    'pieceTotal', provisional, 'cdnStatus', 'WAITING', 'seedEpoch', 0, 'created', NOW,
    'callSystem', ARGV[14], 'dfdaemon', 0)
end

local st = redis.call('HMGET', taskk, 'cdnStatus', 'seedLease', 'seedFinished', 'httpFileLength', 'pieceSize')
local epoch = 0
if seed_due(st[1], st[2], st[3], retry_ms) then
  -- A (re)started seed uses the preheat's URL and headers: they carry the freshest registry token.
  if headers ~= '{}' then redis.call('HSET', taskk, 'headers', headers, 'rawUrl', raw_url) end
  epoch = trigger_seed(taskk, lease_ms)
  st[1] = 'RUNNING'
end
mark_accessed(taskk, tid, false)
return reply({result = 'ok', httpFileLength = st[4] or '', pieceSize = tonumber(st[5]),
  cdnStatus = st[1], seedEpoch = epoch})
