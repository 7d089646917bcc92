#!/usr/bin/env bash
# tests/test_metrics_legacy.py checks deploy/prometheus/alerts.yml with `promtool check rules`. promtool
# ships in Debian's prometheus package; install it when missing, never starting the packaged server.
set -euo pipefail

command -v promtool >/dev/null && { echo "ensure_services: promtool present"; exit 0; }
if [ "$(id -u)" != "0" ]; then
  echo "ensure_services: promtool missing and not root; install Debian's prometheus package by hand" >&2
  exit 1
fi
# shellcheck source=tests/services/lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"
apt_install_no_start prometheus
command -v promtool >/dev/null || { echo "ensure_services: promtool still missing after apt-get install" >&2; exit 1; }
echo "ensure_services: promtool installed"
