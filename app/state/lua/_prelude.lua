-- Shared by every script. ARGV[1] = per-task key prefix "df:{<taskId>}:", ARGV[2] = TTL seconds,
-- ARGV[3] = now in ms (the calling replica's clock; leases tolerate small skew).
local P = ARGV[1]
local TTL = tonumber(ARGV[2])
local NOW = tonumber(ARGV[3])

local function k(suffix) return P .. suffix end
local function touch(key) redis.call('EXPIRE', key, TTL) end

-- Close an in-flight piece of `cid`: drop it from the run map and from its source's load.
-- A run entry is "<dst>|<assigned ms>|<lease expiry ms>" ("<dst>|<expiry>" before piece times were kept).
-- Returns the source it was running against (false when it was not running) and when it was assigned.
local function release(cid, n)
  local runk = k('run:' .. cid)
  local entry = redis.call('HGET', runk, n)
  if not entry then return false end
  redis.call('HDEL', runk, n)
  local dst, assigned = string.match(entry, '^([^|]*)|([^|]*)|[^|]*$')
  if not dst then dst = string.match(entry, '^(.*)|[^|]*$') end
  redis.call('ZREM', k('load:' .. dst), cid .. '|' .. n)
  return dst, tonumber(assigned or '')
end

-- The task's typical piece time (a moving average over reported pieces) sizes the next leases.
local function note_piece_time(assigned)
  if not assigned or NOW < assigned then return end
  local taskk = k('task')
  local cur = redis.call('HMGET', taskk, 'pieceMs', 'pieceSamples')
  local avg, took = tonumber(cur[1] or ''), NOW - assigned
  if avg then avg = math.floor(avg * 0.8 + took * 0.2) else avg = took end
  redis.call('HSET', taskk, 'pieceMs', avg, 'pieceSamples', tonumber(cur[2] or '0') + 1)
end

-- Bytes moved by source class (app/state/traffic.py): per task, cluster-wide and per-minute bucket.
-- Global keys outside the task's slot, like df:tasks: one round trip, no second call on the hot path.
local TRAFFIC_BUCKET_TTL = 7260
local function count_traffic(class, bytes)
  if bytes <= 0 then return end
  local tk = k('traffic')
  redis.call('HINCRBY', tk, class, bytes)
  touch(tk)
  redis.call('HINCRBY', 'df:traffic', class, bytes)
  local bucket = 'df:traffic:m:' .. math.floor(NOW / 60000)
  redis.call('HINCRBY', bucket, class, bytes)
  redis.call('EXPIRE', bucket, TRAFFIC_BUCKET_TTL)
end

-- The framed size of piece n as the seed cache holds it ("md5:framedLen"), else the piece size.
local function piece_bytes(n)
  local framed = string.match(redis.call('HGET', k('cdn'), n) or '', ':(%d+)$')
  return tonumber(framed or redis.call('HGET', k('task'), 'pieceSize') or '0')
end

-- `reported_dst`: the source the client named (may be '' after a migration); the source we assigned
-- (the run entry) wins. A piece counts once per client: when its done bit first goes to 1, whichever
-- channel (pull 701/503 or /peer/piece/suc) brings the news first.
local function record_success(cid, n, add_holder, reported_dst, cdn_dst)
  local ran, assigned = release(cid, n)
  note_piece_time(assigned)
  redis.call('SREM', k('reoffer:' .. cid), n)
  local donek = k('done:' .. cid)
  local had = redis.call('SETBIT', donek, n, 1)
  touch(donek)
  local src = ran or reported_dst
  if had == 0 and src and src ~= '' then
    count_traffic(src == cdn_dst and 'seed' or 'peer', piece_bytes(n))
  end
  if add_holder then
    local hk = k('holders:' .. n)
    redis.call('SADD', hk, cid)
    touch(hk)
  end
end

-- Only a failure that closes a running assignment counts, so a resent report counts once.
local function record_failure(cid, n, reported_dst, cdn_dst)
  -- The client has not got the piece and is not fetching it any more: a new offer gets a full lease.
  redis.call('SREM', k('reoffer:' .. cid), n)
  local dst = release(cid, n)
  if not dst then return end
  if reported_dst ~= '' and reported_dst ~= dst then dst = reported_dst end
  if dst == cdn_dst then return end
  local blk = k('black:' .. cid)
  redis.call('SADD', blk, dst)
  touch(blk)
  redis.call('HINCRBY', k('dt:' .. cid), 'errs', 1)
  local dstk = k('dt:' .. dst)
  if redis.call('EXISTS', dstk) == 1 then redis.call('HINCRBY', dstk, 'serr', 1) end
end

-- Start (or restart) the one seed job of the task: bump the epoch so that any older job stops.
local function trigger_seed(taskk, lease_ms)
  local epoch = redis.call('HINCRBY', taskk, 'seedEpoch', 1)
  redis.call('HSET', taskk, 'cdnStatus', 'RUNNING', 'seedLease', NOW + lease_ms, 'seedError', '',
    'seedReason', '', 'seedBytes', 0, 'seedStarted', NOW)
  redis.call('DEL', k('cdn'))
  return epoch
end

local function seed_is_stale(status, lease)
  return status == 'RUNNING' and NOW > tonumber(lease or '0')
end

-- Whether a task's seed must be (re)started now: never started, its seeder went silent, or it failed
-- at least retry_ms ago.
local function seed_due(status, lease, finished, retry_ms)
  return status == 'WAITING' or seed_is_stale(status, lease)
    or (status == 'FAILED' and NOW - tonumber(finished or '0') >= retry_ms)
end

-- A registration or preheat used the task: it and its seed-cache map live on, the index moves it up.
local function mark_accessed(taskk, tid)
  redis.call('HSET', taskk, 'accessed', NOW)
  touch(taskk)
  touch(k('cdn'))
  redis.call('ZADD', 'df:tasks', NOW, tid)
end
