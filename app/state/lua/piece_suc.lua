-- /peer/piece/suc (PROTOCOL §5.3): the reporter stored a piece and becomes a source for it.
-- Idempotent: a repeated report changes nothing. ARGV[4..]: cid, pieceNum, dst, cdnDst
local cid, n, dst, cdn_dst = ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7]
local dtk = k('dt:' .. cid)
if redis.call('EXISTS', dtk) == 0 then return 0 end
local task = redis.call('HMGET', k('task'), 'cdnStatus', 'pieceTotal', 'pieceSize')
if task[1] == 'SUCCESS' and n >= tonumber(task[2]) then return 0 end
-- First report of this piece by this cid: only then does dst's served counter move (idempotence).
local first = redis.call('SISMEMBER', k('holders:' .. n), cid) == 0
record_success(cid, n, true, dst, cdn_dst)
redis.call('HSET', dtk, 'errs', 0)
if dst ~= '' and dst ~= cdn_dst then
  local dstk = k('dt:' .. dst)
  if redis.call('EXISTS', dstk) == 1 then
    redis.call('HSET', dstk, 'serr', 0)
    if first then
      -- Bytes served to other peers (REST /api/v1/peers): the framed piece as the seed cache holds it.
      local framed = string.match(redis.call('HGET', k('cdn'), n) or '', ':(%d+)$')
      redis.call('HINCRBY', dstk, 'servedPieces', 1)
      redis.call('HINCRBY', dstk, 'servedBytes', tonumber(framed or task[3] or '0'))
    end
  end
end
touch(dtk)
return with_deferred(1)
