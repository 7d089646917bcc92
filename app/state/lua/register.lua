-- Register a dfget (PROTOCOL §5.1): create the task if new, (re)write the cid's dfget-task,
-- and decide whether this registration starts the task's one seed job.
-- ARGV[4..]: tid, cid, taskUrl, rawUrl, md5, identifier, headersJson, httpFileLength, pieceSize,
--            provisionalTotal, peerId, ip, port, path, hostName, version, superNodeIp, callSystem,
--            dfdaemon, seedLeaseMs, seedRetryMs
local tid, cid, task_url, raw_url = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local md5, identifier, headers = ARGV[8], ARGV[9], ARGV[10]
local http_len, piece_size, provisional = ARGV[11], ARGV[12], ARGV[13]
local lease_ms, retry_ms = tonumber(ARGV[23]), tonumber(ARGV[24])

local taskk = k('task')
if redis.call('EXISTS', taskk) == 1 then
  local cur = redis.call('HMGET', taskk, 'taskUrl', 'md5', 'identifier')
  local same = cur[1] == task_url
  if same then
    if cur[2] ~= '' then same = cur[2] == md5 else same = cur[3] == identifier end
  end
  if not same then return reply({result = 'conflict'}) end
elseif http_len == '' then
  return reply({result = 'unprobed'})
else
  redis.call('HSET', taskk, 'taskId', tid, 'taskUrl', task_url, 'rawUrl', raw_url, 'md5', md5,
    'identifier', identifier, 'headers', headers, 'httpFileLength', http_len, 'pieceSize', piece_size,
    'pieceTotal', provisional, 'cdnStatus', 'WAITING', 'seedEpoch', 0, 'created', NOW,
    'callSystem', ARGV[21], 'dfdaemon', ARGV[22])
end

-- A re-registration (migration) keeps the cid's pieces but ends what it had in flight: those pieces
-- may never have reached the client (the old node died before answering), or may be downloaded,
-- or still downloading, with their reports lost with the old node. They are offered again on a short
-- lease (assign.lua): dfget re-reports a piece it holds at once, and ignores one it is still fetching.
local reofferk = k('reoffer:' .. cid)
for _, n in ipairs(redis.call('HKEYS', k('run:' .. cid))) do
  release(cid, n)
  redis.call('SADD', reofferk, n)
end
if redis.call('EXISTS', reofferk) == 1 then touch(reofferk) end
local dtk = k('dt:' .. cid)
redis.call('HDEL', dtk, 'lastq', 'lastp')
redis.call('HSET', dtk, 'cid', cid, 'peerId', ARGV[14], 'ip', ARGV[15], 'port', ARGV[16], 'path', ARGV[17],
  'hostName', ARGV[18], 'version', ARGV[19], 'superNodeIp', ARGV[20], 'callSystem', ARGV[21],
  'status', 'WAITING', 'errs', 0,
  'serr', 0, 'down', 0, 'created', NOW)
touch(dtk)
-- The cluster-wide peer list (/peers, /api/v1/peers): one record per registration, as in Go.
local peer = cjson.encode({ID = ARGV[14], IP = ARGV[15], hostName = ARGV[18],
  port = tonumber(ARGV[16]), version = ARGV[19], created = NOW, cid = cid, taskId = tid})
if GLOBAL then record_peer(G_PEERS, G_SEEN, ARGV[14], peer) else table.insert(DEFERRED, {'peer', ARGV[14], peer}) end
local cidsk = k('cids')
redis.call('SADD', cidsk, cid)
touch(cidsk)

local st = redis.call('HMGET', taskk, 'cdnStatus', 'seedLease', 'seedFinished', 'httpFileLength', 'pieceSize')
local epoch = 0
if seed_due(st[1], st[2], st[3], retry_ms) then
  -- A retry uses the newest registrant's URL and headers (a fresh bearer token, say).
  if st[1] == 'FAILED' and headers ~= '{}' then
    redis.call('HSET', taskk, 'headers', headers, 'rawUrl', raw_url)
  end
  epoch = trigger_seed(taskk, lease_ms)
  st[1] = 'RUNNING'
end
mark_accessed(taskk, tid, true)
-- Lengths go out as the stored decimal strings: cjson prints a Lua number with 14 significant digits.
return reply({result = 'ok', httpFileLength = st[4] or '', pieceSize = tonumber(st[5]),
  cdnStatus = st[1], seedEpoch = epoch})
