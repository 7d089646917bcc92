"""The one Redis key schema of the cluster. Every key, its type and its lifetime is listed here.

All per-task keys share the hash tag ``{<taskId>}`` so that each Lua script touches a single slot
(Redis Cluster safe) and so that a task's state is colocated. The peer list keys share the tag
``{peers}`` and the preheat records and their index the tag ``{preheats}``, for the same reason.

| key                          | type   | content                                                        | TTL        |
|------------------------------|--------|----------------------------------------------------------------|------------|
| df:{T}:task                  | hash   | task: urls, headers, md5, identifier, httpFileLength, pieceSize,| task TTL,  |
|                              |        | pieceTotal, cdnStatus, fileLength, realMd5, seed epoch/lease/  | refreshed  |
|                              |        | progress/error, created/accessed (ms), pieceMs/pieceSamples    | on access  |
|                              |        | (moving average of assign-to-report time: sizes piece leases), |            |
|                              |        | seedOwner "<epoch>:<run id>" (the one run seeding that epoch), |            |
|                              |        | downLinkKiB (PUT /api/v1/tasks/{id}/limits, task_limit.lua)    |            |
| df:{T}:cdn                   | hash   | pieceNum -> "md5hex:framedLen" of pieces the seed cache holds   | task TTL   |
| df:{T}:cids                  | set    | cids registered for the task                                   | task TTL   |
| df:{T}:dt:{cid}              | hash   | dfget-task: peerId, ip, port, path, hostName, version,         | task TTL   |
|                              |        | superNodeIp, callSystem, status, errs (client errors), serr    |            |
|                              |        | (serving errors), down, lastq/lastp (last pull, LB retries),   |            |
|                              |        | servedPieces/servedBytes (pieces, framed bytes, that other cids|            |
|                              |        | reported fetching from this cid: piece_suc.lua, once per       |            |
|                              |        | reporter and piece)                                            |            |
| df:{T}:done:{cid}            | bitmap | pieces this cid has (SUCCESS); never cleared while it lives    | task TTL   |
| df:{T}:run:{cid}             | hash   | pieceNum -> "<dst>|<assigned ms>|<lease expiry ms>": pieces in  | task TTL   |
|                              |        | flight                                                         |            |
| df:{T}:reoffer:{cid}         | set    | pieces that were in flight for cid when it re-registered        | task TTL   |
|                              |        | (migration): offered again on a short lease (assign.lua)       |            |
| df:{T}:black:{cid}           | set    | dst cids that failed this cid (never offered to it again)      | task TTL   |
| df:{T}:holders:{n}           | set    | cids that reported piece n via /peer/piece/suc (sources)       | task TTL   |
| df:{T}:load:{dst}            | zset   | "<srcCid>|<n>" scored by lease expiry ms: uploads in flight     | task TTL   |
|                              |        | of dst ("cdn" for the seed cache); expired members are stale    |            |
| df:{T}:probe                 | string | lock of the one registration that probes the source length     | probe time |
| df:{T}:unreach               | string | negative cache: the source refused; registrations get 607      | fail_access|
| df:{T}:refused               | hash   | last source-policy refusal of a registration for T (mostly a T | task TTL   |
|                              |        | that was never created): reason, message, url, first/last ms,  |            |
|                              |        | count; shown by GET /api/v1/tasks/{id}                         |            |
| df:{T}:traffic               | hash   | bytes clients got, by source class: peer, seed, source        | task TTL   |
|                              |        | (app/state/traffic.py; written in _prelude.lua count_traffic)   |            |
| df:{T}:bs                    | set    | cids whose back-to-source /task/metrics report was counted     | task TTL   |
| df:{T}:pin                   | string | the preheat id that warmed T: the disk GC never evicts T's seed | pin time   |
|                              |        | file while it exists (app/cdn/pins.py). TTL set and refreshed  | (DF_GC_PRE-|
|                              |        | by each preheat of T; DELETE /api/v1/tasks/{id} removes it     | HEAT_PIN_S)|
| df:traffic                   | hash   | cluster-wide bytes by source class since the state was created | none       |
| df:traffic:m:{minute}        | hash   | bytes by source class in one minute (epoch ms // 60000)        | 2 h + 1 min|
| df:limits                    | hash   | live limits (app/limits): downLinkKiB, seedUploadKiBps,        | none       |
|                              |        | peerDownLimit, peerUpLimit, cdnLoadLimit; absent = setting     |            |
| df:tasks                     | zset   | taskId scored by last access ms (listing, GC of the index)     | none, GC'd |
| df:{peers}                   | hash   | peerId -> JSON {ID, IP, hostName, port, version, created (ms),  | none, GC'd |
|                              |        | cid, taskId}: one record per registration, as Go's peer list    |            |
| df:{peers}:seen              | zset   | peerId scored by registration ms; prunes df:peers after TTL     | none, GC'd |
| df:{peers}:cdn:{ip}:{port}   | string | id of the seed cache's own record in df:peers for that         | none       |
|                              |        | advertise address (cdn_peer.lua; created at replica start)     |            |
| df:audit                     | stream | audit events waiting for Postgres (consumer group audit-writers)| MAXLEN     |
| df:{preheats}:{id}           | hash   | a preheat (id: the legacy formula, §13.1): request (type, url,  | 7 days     |
|                              |        | filter, identifier, headers, platform, credentials, timeout,   | (retention)|
|                              |        | concurrency), actor, origin, status, errorMsg, start/finish/   |            |
|                              |        | updated ms, runner epoch + lease, layers (JSON per-blob        |            |
|                              |        | progress: url, digest, task id, state, bytes, total, error)    |            |
| df:{preheats}                | zset   | preheat ids scored by start ms (listing, retention)             | none, GC'd |
| df:oapi:seq                  | string | last integer id of an Open API job                              | none       |
| df:oapi:job:{n}              | hash   | an Open API (/oapi/v1/jobs) job: preheat id, created ms, args,  | 7 days     |
|                              |        | actor; its state is read live from the preheat                 |            |
| df:preheat:slots             | zset   | "<preheat>:<epoch>:<taskId>" of running preheat seeds, scored   | none       |
|                              |        | by lease expiry ms (DF_PREHEAT_CLUSTER_CONCURRENCY semaphore)  |            |
| df:replica:{id}              | string | a live replica's self-description (heartbeat)                  | heartbeat  |
| df:replicas                  | zset   | replica ids scored by last heartbeat ms                         | none, GC'd |
| df:seedstats                 | hash   | seed jobs cluster-wide, by whoever ran them (replica or worker):| none       |
|                              |        | trigger, triggerFailed, cacheHit, download, downloadFailed      |            |
|                              |        | (HINCRBY; the legacy cdn_* counters on /metrics)               |            |
| df:gc:lock                   | string | token of the one replica in a seed-cache disk GC pass (gc.py;   | 120 s      |
|                              |        | redis-py's Lock, given back when the pass ends)                 |            |

"GC'd" index entries (df:tasks, df:{peers}/seen, df:replicas) past the task TTL (replicas: three
heartbeats) are dropped every 30 s by each replica's primary worker (app/cluster/maintenance.py), and
also as registrations and readers come by: after the TTLs Redis holds what it held before the swarm.

State transitions that two replicas could race on are single Lua scripts in ``app/state/lua``.

Separate commands (Redis Cluster)
---------------------------------
On one Redis a task script also writes the global keys of its request, declared in its KEYS (one
round trip). On a Redis Cluster those live in other slots, so the script returns them and
``ClusterState`` sends them right after, in one pipeline (``_prelude.lua``, ``store.py``). Why each
may be a separate command:

* ``df:tasks`` ZADD (registration, pull, preheat) and its prune by score: an index entry is
  idempotent (the latest access wins within milliseconds), listings skip ids whose task hash is gone,
  and the prune only drops entries older than the task TTL. A lost ZADD (a crash in between) leaves
  the task listed at its previous access until its next one.
* ``df:traffic`` and ``df:traffic:m:*`` HINCRBYs: the once-per-(client, piece) decision stays in
  the task script (the done bit, the ``bs`` set); the increments commute, so no race. A crash in
  between loses that one increment of the cluster-wide counters; the per-task counter has it.
* the peer record (``df:{peers}``, ``df:{peers}:seen``, pruned): one script on its own slot
  (peer_record.lua), written only after the registration succeeded, as on one Redis. It is a listing
  for operators, not read by the scheduler.
* ``DELETE /api/v1/tasks/{id}``: UNLINK of the task's keys (one slot, one command) and ZREM of its
  index entry, in one pipeline instead of one MULTI.

Read-only listings over every task (task_list.lua, task_census.lua) run in one script on one Redis;
on a Redis Cluster app/state/listing.py reads the index and the task hashes pipelined.
Key names: ``df:{peers}``, ``df:{peers}:seen``, ``df:{peers}:cdn:*``, ``df:{preheats}`` and
``df:{preheats}:*`` were ``df:peers``, ``df:peers:seen``, ``df:cdnpeer:*``, ``df:preheats`` and
``df:preheat:*`` before Redis Cluster support: an upgraded deployment starts with an empty peer list
(re-filled by registrations) and no preheat history; the old keys can be deleted.
"""

from __future__ import annotations

PREFIX = "df:"
TASK_INDEX = f"{PREFIX}tasks"
PEERS = f"{PREFIX}{{peers}}"
PEERS_SEEN = f"{PEERS}:seen"
AUDIT_STREAM = f"{PREFIX}audit"
AUDIT_GROUP = "audit-writers"
PREHEAT_INDEX = f"{PREFIX}{{preheats}}"
PREHEAT_SLOTS = f"{PREFIX}preheat:slots"
OAPI_JOB_SEQ = f"{PREFIX}oapi:seq"
REPLICAS = f"{PREFIX}replicas"
CDN_DST = "cdn"  # the dst name of the seed cache in run/load keys
TRAFFIC_TOTAL = f"{PREFIX}traffic"
# Mirrored in _prelude.lua (TRAFFIC_BUCKET_TTL); tests/test_traffic.py checks the two agree.
TRAFFIC_BUCKET_SECONDS = 60
TRAFFIC_BUCKET_TTL_SECONDS = 2 * 3600 + 60
LIMITS = f"{PREFIX}limits"
SEED_STATS = f"{PREFIX}seedstats"


def task_prefix(tid: str) -> str:
    return f"{PREFIX}{{{tid}}}:"


def task_key(tid: str) -> str:
    return f"{task_prefix(tid)}task"


def cdn_key(tid: str) -> str:
    return f"{task_prefix(tid)}cdn"


def cids_key(tid: str) -> str:
    return f"{task_prefix(tid)}cids"


def dt_key(tid: str, cid: str) -> str:
    return f"{task_prefix(tid)}dt:{cid}"


def done_key(tid: str, cid: str) -> str:
    return f"{task_prefix(tid)}done:{cid}"


def run_key(tid: str, cid: str) -> str:
    return f"{task_prefix(tid)}run:{cid}"


def reoffer_key(tid: str, cid: str) -> str:
    return f"{task_prefix(tid)}reoffer:{cid}"


def black_key(tid: str, cid: str) -> str:
    return f"{task_prefix(tid)}black:{cid}"


def holders_key(tid: str, piece_num: int) -> str:
    return f"{task_prefix(tid)}holders:{piece_num}"


def load_key(tid: str, dst: str) -> str:
    return f"{task_prefix(tid)}load:{dst}"


def probe_key(tid: str) -> str:
    return f"{task_prefix(tid)}probe"


def unreach_key(tid: str) -> str:
    return f"{task_prefix(tid)}unreach"


def refused_key(tid: str) -> str:
    return f"{task_prefix(tid)}refused"


def traffic_key(tid: str) -> str:
    return f"{task_prefix(tid)}traffic"


def pin_key(tid: str) -> str:
    return f"{task_prefix(tid)}pin"


def traffic_bucket_key(minute: int) -> str:
    """``minute``: epoch ms // 60000."""
    return f"{TRAFFIC_TOTAL}:m:{minute}"


def preheat_key(preheat_id: str) -> str:
    return f"{PREHEAT_INDEX}:{preheat_id}"


def oapi_job_key(job_id: int) -> str:
    return f"{PREFIX}oapi:job:{job_id}"


def replica_key(replica_id: str) -> str:
    return f"{PREFIX}replica:{replica_id}"


def cdn_peer_key(advertise_ip: str, download_port: int) -> str:
    return f"{PEERS}:cdn:{advertise_ip}:{download_port}"


class CdnStatus:
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
