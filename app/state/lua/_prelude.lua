-- Shared by every script. ARGV[1] = per-task key prefix "df:{<taskId>}:", ARGV[2] = TTL seconds,
-- ARGV[3] = now in ms (the calling replica's clock; leases tolerate small skew).
-- KEYS[1] is the task hash "df:{<taskId>}:task". The other per-task keys are built from ARGV[1]: they
-- carry the same hash tag, so they are in KEYS[1]'s slot (Redis Cluster serves them on its node).
local P = ARGV[1]
local TTL = tonumber(ARGV[2])
local NOW = tonumber(ARGV[3])

-- Global keys (app/state/schema.py "Separate commands"): on one Redis the caller declares them in
-- KEYS[2..6] and the script writes them here, in the same round trip. On a Redis Cluster they live in
-- other slots, out of a script's reach: KEYS holds the task hash alone and the script hands those
-- writes back (`deferred`, see reply/with_deferred) for the caller to send right after.
local GLOBAL = #KEYS > 1
local G_TASKS, G_TRAFFIC, G_BUCKET, G_PEERS, G_SEEN = KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local DEFERRED = {}

-- A JSON reply, with the deferred global writes when there are any.
local function reply(t)
  if #DEFERRED > 0 then t.deferred = DEFERRED end
  return cjson.encode(t)
end

-- An integer reply as is, or {value, deferred JSON} when there are deferred global writes.
local function with_deferred(value)
  if #DEFERRED > 0 then return {value, cjson.encode(DEFERRED)} end
  return value
end

-- The task index (df:tasks) moves the task up; with `prune`, it forgets tasks whose state expired.
local function index_task(tid, prune)
  if not GLOBAL then
    table.insert(DEFERRED, {'index', tid, prune and 1 or 0})
    return
  end
  redis.call('ZADD', G_TASKS, NOW, tid)
  if prune then redis.call('ZREMRANGEBYSCORE', G_TASKS, '-inf', NOW - TTL * 1000) end
end

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

-- Bytes moved by source class (app/state/traffic.py): per task, cluster-wide and per-minute bucket
-- (G_BUCKET: the caller names the bucket of NOW). On one Redis: one round trip, no second call.
local TRAFFIC_BUCKET_TTL = 7260
local function count_traffic(class, bytes)
  if bytes <= 0 then return end
  local tk = k('traffic')
  redis.call('HINCRBY', tk, class, bytes)
  touch(tk)
  if not GLOBAL then
    table.insert(DEFERRED, {'traffic', class, bytes})
    return
  end
  redis.call('HINCRBY', G_TRAFFIC, class, bytes)
  redis.call('HINCRBY', G_BUCKET, class, bytes)
  redis.call('EXPIRE', G_BUCKET, TRAFFIC_BUCKET_TTL)
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

-- A registration or preheat used the task: it and its seed-cache map live on, the index moves it up
-- (and with `prune` forgets tasks whose state has expired, so that it does not grow forever).
local function mark_accessed(taskk, tid, prune)
  redis.call('HSET', taskk, 'accessed', NOW)
  touch(taskk)
  touch(k('cdn'))
  index_task(tid, prune)
end
