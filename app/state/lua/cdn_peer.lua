-- The seed cache's own peer record (PROTOCOL §7.5: Go registers itself as a peer at start-up).
-- Replicas behind one advertise address share one record; the first replica to start creates it,
-- and a replica start re-creates it after a DELETE, as a Go restart would.
-- KEYS[1]: df:cdnpeer:<ip>:<port> (the record's id), KEYS[2]: df:peers. ARGV[4..]: new id, record JSON
local id = redis.call('GET', KEYS[1])
if id and redis.call('HEXISTS', KEYS[2], id) == 1 then return id end
redis.call('SET', KEYS[1], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
return ARGV[4]
