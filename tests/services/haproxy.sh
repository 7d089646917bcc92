#!/usr/bin/env bash
# The HA tests (tests/test_ha_rolling.py, tests/haproxy.py) run Debian's haproxy in the foreground with
# deploy/haproxy/haproxy.cfg on loopback. Install the binary when missing; never start the packaged
# system service (the tests start their own process, on their own ports).
set -euo pipefail

command -v haproxy >/dev/null && { echo "ensure_services: haproxy present"; exit 0; }
if [ "$(id -u)" != "0" ]; then
  echo "ensure_services: haproxy missing and not root; install it by hand (the HA tests need it)" >&2
  exit 1
fi
# shellcheck source=tests/services/lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"
apt_install_no_start haproxy
command -v haproxy >/dev/null || { echo "ensure_services: haproxy still missing after apt-get install" >&2; exit 1; }
echo "ensure_services: haproxy installed"
