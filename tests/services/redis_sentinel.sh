#!/usr/bin/env bash
# The Redis failure tests (tests/test_redis_failover.py, tests/redis_servers.py) run their own
# redis-server and redis-sentinel processes on free ports. Install Debian's binaries when missing;
# never start the packaged system services (the shared test Redis is started by ensure_services.sh).
# The Redis Cluster tests (tests/redis_cluster.py) also need redis-cli (redis-tools) for --cluster create.
set -euo pipefail

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-sentinel >/dev/null || missing+=(redis-sentinel)
command -v redis-cli >/dev/null || missing+=(redis-tools)
if [ "${#missing[@]}" = 0 ]; then
  echo "ensure_services: redis-server, redis-sentinel and redis-cli present"
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "ensure_services: ${missing[*]} missing and not root; install it by hand (the Redis failure tests need it)" >&2
  exit 1
fi
# shellcheck source=tests/services/lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"
apt_install_no_start "${missing[@]}"
for binary in redis-server redis-sentinel redis-cli; do
  command -v "$binary" >/dev/null || { echo "ensure_services: $binary still missing after apt-get install" >&2; exit 1; }
done
echo "ensure_services: installed ${missing[*]}"
