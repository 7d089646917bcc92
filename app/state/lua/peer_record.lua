-- [Redis Cluster] The peer record of a registration, deferred by register.lua (its keys are in
-- another slot than the task's). KEYS[1]: df:{peers}, KEYS[2]: df:{peers}:seen. ARGV[4..]: id, JSON
record_peer(KEYS[1], KEYS[2], ARGV[4], ARGV[5])
return 1
