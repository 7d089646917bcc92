#!/usr/bin/env bash
# tests/test_workers.py reads the listen backlog the kernel gave each port with `ss` (its Send-Q);
# /proc/net/tcp does not show it. `ss` ships in Debian's iproute2, missing from minimal images.
set -euo pipefail

command -v ss >/dev/null && { echo "ensure_services: ss present"; exit 0; }
if [ "$(id -u)" != "0" ]; then
  echo "ensure_services: ss missing and not root; install Debian's iproute2 package by hand" >&2
  exit 1
fi
# shellcheck source=tests/services/lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"
apt_install_no_start iproute2
command -v ss >/dev/null || { echo "ensure_services: ss still missing after apt-get install" >&2; exit 1; }
echo "ensure_services: ss installed"
