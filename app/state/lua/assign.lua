-- Commit the scheduler's choice for one pull. Each pick is re-checked against limits that other
-- replicas may have used up since the snapshot; picks that no longer fit are dropped.
-- ARGV[4..]: cid, fingerprint, pieceLeaseMs, upLimit, cdnLimit, eliminationLimit, cdnDst,
--            reofferLeaseMs, leaseFloorMs, leaseFactor, then pairs (pieceNum, dst)
local cid, fingerprint = ARGV[4], ARGV[5]
local piece_lease, up_limit, cdn_limit = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local elimination, cdn_dst, reoffer_lease = tonumber(ARGV[9]), ARGV[10], tonumber(ARGV[11])
local lease_floor, lease_factor = tonumber(ARGV[12]), tonumber(ARGV[13])

-- A report that never comes (lost with a replica, or with Redis during an outage) must not block a
-- piece for the whole lease: once a few pieces of the task were reported, a lease is a few times the
-- task's typical piece time. Too short a lease costs little: dfget ignores an offer of a piece it is
-- still fetching, and reports it when done.
local timing = redis.call('HMGET', k('task'), 'pieceMs', 'pieceSamples')
local typical, samples = tonumber(timing[1] or ''), tonumber(timing[2] or '0')
if typical and samples >= 4 then
  piece_lease = math.min(piece_lease, math.max(lease_floor, math.floor(lease_factor * typical)))
end
local dtk, runk, donek, cdnk = k('dt:' .. cid), k('run:' .. cid), k('done:' .. cid), k('cdn')
local blk, reofferk = k('black:' .. cid), k('reoffer:' .. cid)

-- Run again for the same pull (its reply was lost on a dropped connection): repeat the same picks.
local again = redis.call('HGET', dtk, 'lastq') == fingerprint
local out, lastp = {}, {}
for i = 14, #ARGV, 2 do
  local n, dst = ARGV[i], ARGV[i + 1]
  local md5 = redis.call('HGET', cdnk, n)
  local entry = redis.call('HGET', runk, n)
  if md5 and again and entry and string.sub(entry, 1, #dst + 1) == dst .. '|' then
    table.insert(lastp, n .. '|' .. dst)
    if dst == cdn_dst then
      table.insert(out, {tonumber(n), dst, md5})
    else
      local info = redis.call('HMGET', k('dt:' .. dst), 'ip', 'port', 'path')
      table.insert(out, {tonumber(n), dst, md5, info[1], tonumber(info[2]), info[3]})
    end
  elseif md5 and redis.call('GETBIT', donek, n) == 0 and not entry then
    local lk = k('load:' .. dst)
    redis.call('ZREMRANGEBYSCORE', lk, '-inf', NOW)
    local fits, info = false, nil
    if dst == cdn_dst then
      fits = redis.call('ZCARD', lk) < cdn_limit
    else
      info = redis.call('HMGET', k('dt:' .. dst), 'ip', 'port', 'path', 'down', 'serr')
      fits = info[1] ~= false and tonumber(info[2]) > 0 and info[4] ~= '1'
        and tonumber(info[5] or '0') < elimination and redis.call('ZCARD', lk) < up_limit
        and redis.call('SISMEMBER', blk, dst) == 0
    end
    if fits then
      -- A piece the client may hold already (see register.lua) must not block it for a whole lease:
      -- dfget re-reports a held piece in its next pull, and one it still fetches is offered again soon.
      local lease = piece_lease
      if redis.call('SISMEMBER', reofferk, n) == 1 then lease = math.min(lease, reoffer_lease) end
      local expiry = NOW + lease
      redis.call('HSET', runk, n, dst .. '|' .. NOW .. '|' .. expiry)
      redis.call('ZADD', lk, expiry, cid .. '|' .. n)
      touch(lk)
      table.insert(lastp, n .. '|' .. dst)
      if info then
        table.insert(out, {tonumber(n), dst, md5, info[1], tonumber(info[2]), info[3]})
      else
        table.insert(out, {tonumber(n), dst, md5})
      end
    end
  end
end
touch(runk)
if #lastp > 0 then
  redis.call('HSET', dtk, 'lastq', fingerprint, 'lastp', table.concat(lastp, ','))
else
  redis.call('HDEL', dtk, 'lastq', 'lastp')
end
return cjson.encode(out)
