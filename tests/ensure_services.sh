#!/usr/bin/env bash
# Make sure the real services the tests need are up on loopback. On the CI machine kind they are
# already running; on a fresh Debian machine they are installed (as root) and started here.
set -euo pipefail

need_apt_update=1
apt_install() {
  if [ "$(id -u)" != "0" ]; then
    echo "ensure_services: $* missing and not root; install it by hand" >&2
    return 1
  fi
  if [ "$need_apt_update" = 1 ]; then apt-get update -qq; need_apt_update=0; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }

if ! redis_up; then
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p /tmp/df-test-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/df-test-redis --logfile /tmp/df-test-redis/redis.log
  for _ in $(seq 1 50); do redis_up && break; sleep 0.1; done
fi
redis_up || { echo "ensure_services: Redis did not come up on 127.0.0.1:6379" >&2; exit 1; }
echo "ensure_services: Redis up on 127.0.0.1:6379"

# Services of other areas (Postgres, a registry, ...) bring their own scripts.
for extra in "$(dirname "$0")"/services/*.sh; do
  if [ -e "$extra" ]; then bash "$extra"; fi
done
