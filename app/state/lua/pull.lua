-- One /peer/task request (PROTOCOL §5.2, §11.3, §11.4): record the reported outcome, then return a
-- snapshot of everything the pure scheduler needs, or a final answer.
-- ARGV[4..]: tid, cid, status, result, pieceNum, dst, fingerprint, downLimit, holderSample,
--            seedLeaseMs, cdnDst, window
local tid, cid = ARGV[4], ARGV[5]
local status, result, n, dst = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local fingerprint, down_limit, sample = ARGV[10], tonumber(ARGV[11]), tonumber(ARGV[12])
local lease_ms, cdn_dst, window = tonumber(ARGV[13]), ARGV[14], tonumber(ARGV[15])

local taskk, dtk, runk, cdnk = k('task'), k('dt:' .. cid), k('run:' .. cid), k('cdn')
local task = redis.call('HMGET', taskk, 'cdnStatus', 'pieceTotal', 'fileLength', 'realMd5', 'seedLease',
  'seedError', 'pieceSize', 'downLinkKiB')
local down_link = task[8] or ''
if not task[1] or redis.call('EXISTS', dtk) == 0 then return reply({kind = 'unknown'}) end

-- A load balancer retry of the pull we answered last: hand out the same pieces again.
local last = redis.call('HMGET', dtk, 'lastq', 'lastp', 'superNodeIp', 'ip')
local piece_size, super_node = tonumber(task[7]), last[3] or ''
if last[1] == fingerprint and last[2] and last[2] ~= '' then
  local still = true
  for item in string.gmatch(last[2], '[^,]+') do
    local pn, pdst = string.match(item, '^(%d+)|(.*)$')
    local entry = redis.call('HGET', runk, pn)
    if not entry or string.sub(entry, 1, #pdst + 1) ~= pdst .. '|' then still = false break end
  end
  if still then
    local out = {}
    for item in string.gmatch(last[2], '[^,]+') do
      local pn, pdst = string.match(item, '^(%d+)|(.*)$')
      local md5 = redis.call('HGET', cdnk, pn) or ''
      if pdst == cdn_dst then
        table.insert(out, {tonumber(pn), pdst, md5})
      else
        local info = redis.call('HMGET', k('dt:' .. pdst), 'ip', 'port', 'path')
        if info[1] then table.insert(out, {tonumber(pn), pdst, md5, info[1], tonumber(info[2]), info[3]}) end
      end
    end
    if #out > 0 then return reply({kind = 'replay', assigned = out, pieceSize = piece_size,
      superNodeIp = super_node, downLink = down_link}) end
  end
end

redis.call('HSET', taskk, 'accessed', NOW)
touch(taskk)
touch(dtk)
index_task(tid, false)

local piece_total = tonumber(task[2] or '0')
local sealed = task[1] == 'SUCCESS'
if status == 700 then
  redis.call('HSET', dtk, 'status', 'RUNNING')
  -- After a migration the START item still carries the last outcome; it is true, so keep it.
  if result == 503 and n >= 0 and (not sealed or n < piece_total) then record_success(cid, n, false, dst, cdn_dst) end
elseif status == 701 then
  if n < 0 then return reply({kind = 'param', msg = 'invalid range'}) end
  if result == 503 or result == 501 then
    if not sealed or n < piece_total then record_success(cid, n, false, dst, cdn_dst) end
  elseif result == 500 then
    record_failure(cid, n, dst, cdn_dst)
  else
    return reply({kind = 'param', msg = 'invalid result ' .. tostring(result)})
  end
elseif status == 702 then
  redis.call('HSET', dtk, 'status', result == 501 and 'SUCCESS' or 'FAILED')
  return reply({kind = 'finish', md5 = task[4] or '', fileLength = task[3] or '0'})
else
  return reply({kind = 'param', msg = 'invalid status ' .. tostring(status)})
end

if task[1] == 'FAILED' then return reply({kind = 'failed', msg = task[6] or '' }) end
if seed_is_stale(task[1], task[5]) then
  return reply({kind = 'wait', seedEpoch = trigger_seed(taskk, lease_ms)})
end
if task[1] ~= 'RUNNING' and not sealed then return reply({kind = 'wait', seedEpoch = 0}) end

-- Pieces in flight; an expired lease means the client never reported it: offer it again.
local running = {}
local run = redis.call('HGETALL', runk)
for i = 1, #run, 2 do
  local expiry = tonumber(string.match(run[i + 1], '|([^|]*)$'))
  if expiry < NOW then release(cid, run[i]) else running[run[i]] = true end
end

-- The client's bitmap read once (one GET, not a GETBIT per piece of the file): SETBIT numbers bits from
-- the most significant bit of each byte.
local done = redis.call('GET', k('done:' .. cid)) or ''
local function has(pn)
  local byte = string.byte(done, math.floor(pn / 8) + 1)
  -- Arithmetic, not the bit library: the embedded mode's Lua (fakeredis) has none.
  return byte ~= nil and math.floor(byte / 2 ^ (7 - pn % 8)) % 2 == 1
end
local cdn = redis.call('HGETALL', cdnk)
local have, running_count, available = 0, 0, {}
local running_list = {}
for i = 1, #cdn, 2 do
  local pn = cdn[i]
  if has(tonumber(pn)) then
    have = have + 1
  elseif running[pn] then
    running_count = running_count + 1
    table.insert(running_list, tonumber(pn))
  else
    table.insert(available, {tonumber(pn), cdn[i + 1]})
  end
end
if sealed and have >= piece_total then
  redis.call('HSET', dtk, 'status', 'SUCCESS')
  return reply({kind = 'finish', md5 = task[4] or '', fileLength = task[3] or '0'})
end
if #available == 0 or running_count >= down_limit then
  return reply({kind = 'wait', seedEpoch = 0, have = have, cdn = #cdn / 2})
end

-- A large file has thousands of pieces, and sampling the holders of all of them on every pull made a
-- pull's cost grow with the file. Only the `window` pieces the scheduler would try first are sampled:
-- its own order (app/scheduler/core.py: fewest holders, then nearest to the pieces running; here ties
-- by piece number, where the scheduler draws at random within the window).
if #available > window then
  local center = 0
  if #running_list > 0 then
    local sum = 0
    for _, pn in ipairs(running_list) do sum = sum + pn end
    center = math.floor(sum / #running_list)
  end
  for _, piece in ipairs(available) do
    piece[3] = redis.call('SCARD', k('holders:' .. piece[1]))
    piece[4] = math.abs(piece[1] - center)
  end
  table.sort(available, function(a, b)
    if a[3] ~= b[3] then return a[3] < b[3] end
    if a[4] ~= b[4] then return a[4] < b[4] end
    return a[1] < b[1]
  end)
  for i = #available, window + 1, -1 do available[i] = nil end
end

local function in_flight(lk)
  return redis.call('ZCOUNT', lk, '(' .. NOW, '+inf')
end

-- Holders: a bounded random sample per piece keeps the reply small in a large swarm.
local pieces, candidates = {}, {}
for _, piece in ipairs(available) do
  local hk = k('holders:' .. piece[1])
  local sampled = redis.call('SRANDMEMBER', hk, sample)
  local holders = {}
  for _, h in ipairs(sampled) do
    if h ~= cid then
      if candidates[h] == nil then
        local info = redis.call('HMGET', k('dt:' .. h), 'port', 'down', 'serr', 'ip')
        if not info[1] or info[2] == '1' then
          candidates[h] = false
        else
          -- Uploads in flight: members whose lease has not expired (assign.lua prunes the others
          -- before it adds one, so the set stays small without a write here).
          candidates[h] = {tonumber(info[1]), tonumber(info[3] or '0'), in_flight(k('load:' .. h)), info[4] or ''}
        end
      end
      if candidates[h] then table.insert(holders, h) else redis.call('SREM', hk, h) end
    end
  end
  table.insert(pieces, {piece[1], piece[2], piece[3] or redis.call('SCARD', hk), holders})
end
local cands = {}
for h, info in pairs(candidates) do
  if info then cands[h] = info end
end
return reply({kind = 'snapshot', pieceSize = piece_size, superNodeIp = super_node, ip = last[4] or '',
  downLink = down_link,
  pieces = pieces,
  running = running_list, candidates = cands,
  cdnLoad = in_flight(k('load:' .. cdn_dst)), black = redis.call('SMEMBERS', k('black:' .. cid)),
  errors = tonumber(redis.call('HGET', dtk, 'errs') or '0')})
